//! Element types and reductions a device understands, and the host
//! reference of each reduction (what a device kernel must compute).

use std::fmt;

/// An element type of device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `u8`.
    U8,
    /// `i32`.
    I32,
    /// `u32`.
    U32,
    /// `i64`.
    I64,
    /// `u64`.
    U64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
}

impl Dtype {
    /// Every type, in a fixed order (the kernels' table follows it).
    pub const ALL: [Dtype; 7] = [
        Dtype::U8,
        Dtype::I32,
        Dtype::U32,
        Dtype::I64,
        Dtype::U64,
        Dtype::F32,
        Dtype::F64,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }

    /// The short name (`f32`), as kernels are named.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "u8",
            Dtype::I32 => "i32",
            Dtype::U32 => "u32",
            Dtype::I64 => "i64",
            Dtype::U64 => "u64",
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A reduction a device runs (every one commutative, so the order of the
/// operands never matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DevOp {
    /// `a + b` (integers wrap).
    Sum,
    /// `a * b` (integers wrap).
    Prod,
    /// The smaller (for floats, the one that is not NaN).
    Min,
    /// The larger (for floats, the one that is not NaN).
    Max,
}

impl DevOp {
    /// Every reduction, in a fixed order.
    pub const ALL: [DevOp; 4] = [DevOp::Sum, DevOp::Prod, DevOp::Min, DevOp::Max];

    /// The short name (`sum`), as kernels are named.
    pub fn name(self) -> &'static str {
        match self {
            DevOp::Sum => "sum",
            DevOp::Prod => "prod",
            DevOp::Min => "min",
            DevOp::Max => "max",
        }
    }
}

impl fmt::Display for DevOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that is a [`Dtype`]: plain old data of that size.
pub trait DeviceElem: bytemuck::Pod + Send + Sync + 'static {
    /// Its device type.
    const DTYPE: Dtype;
}

macro_rules! elem {
    ($($t:ty => $d:ident),*) => {$(
        impl DeviceElem for $t {
            const DTYPE: Dtype = Dtype::$d;
        }
    )*};
}
elem!(u8 => U8, i32 => I32, u32 => U32, i64 => I64, u64 => U64, f32 => F32, f64 => F64);

/// `acc[i] = acc[i] ⊕ src[i]` on host memory: the reference every device
/// kernel is checked against, and the host device's implementation.
/// `acc` and `src` hold whole elements of `ty` (equal lengths), aligned
/// to the element size.
pub fn reduce_host(ty: Dtype, op: DevOp, acc: &mut [u8], src: &[u8]) {
    fn go<T: bytemuck::Pod>(acc: &mut [u8], src: &[u8], f: impl Fn(T, T) -> T) {
        let acc: &mut [T] = bytemuck::cast_slice_mut(acc);
        let src: &[T] = bytemuck::cast_slice(src);
        for (a, b) in acc.iter_mut().zip(src) {
            *a = f(*a, *b);
        }
    }
    macro_rules! int {
        ($t:ty) => {
            match op {
                DevOp::Sum => go::<$t>(acc, src, |a, b| a.wrapping_add(b)),
                DevOp::Prod => go::<$t>(acc, src, |a, b| a.wrapping_mul(b)),
                DevOp::Min => go::<$t>(acc, src, |a, b| a.min(b)),
                DevOp::Max => go::<$t>(acc, src, |a, b| a.max(b)),
            }
        };
    }
    macro_rules! float {
        ($t:ty) => {
            match op {
                DevOp::Sum => go::<$t>(acc, src, |a, b| a + b),
                DevOp::Prod => go::<$t>(acc, src, |a, b| a * b),
                DevOp::Min => go::<$t>(acc, src, <$t>::min),
                DevOp::Max => go::<$t>(acc, src, <$t>::max),
            }
        };
    }
    match ty {
        Dtype::U8 => int!(u8),
        Dtype::I32 => int!(i32),
        Dtype::U32 => int!(u32),
        Dtype::I64 => int!(i64),
        Dtype::U64 => int!(u64),
        Dtype::F32 => float!(f32),
        Dtype::F64 => float!(f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T: DeviceElem>(op: DevOp, a: &[T], b: &[T]) -> Vec<T> {
        let mut acc = a.to_vec();
        reduce_host(
            T::DTYPE,
            op,
            bytemuck::cast_slice_mut(&mut acc),
            bytemuck::cast_slice(b),
        );
        acc
    }

    #[test]
    fn integers_wrap_and_floats_skip_nan() {
        assert_eq!(run(DevOp::Sum, &[250u8, 1], &[10, 2]), [4, 3]);
        assert_eq!(run(DevOp::Prod, &[i32::MAX], &[2]), [-2]);
        assert_eq!(run(DevOp::Min, &[-3i64, 7], &[2, 9]), [-3, 7]);
        assert_eq!(run(DevOp::Max, &[3u64, 7], &[2, 9]), [3, 9]);
        let m = run(DevOp::Max, &[f32::NAN, 1.0], &[2.0, f32::NAN]);
        assert_eq!(m, [2.0, 1.0]);
        assert_eq!(run(DevOp::Sum, &[0.5f64], &[0.25]), [0.75]);
    }

    #[test]
    fn names_are_the_kernel_names() {
        let names: Vec<_> = Dtype::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(names, ["u8", "i32", "u32", "i64", "u64", "f32", "f64"]);
        assert!(Dtype::ALL.iter().all(|d| d.size().is_power_of_two()));
    }
}
