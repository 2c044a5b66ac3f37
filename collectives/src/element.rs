//! Element types of messages and reductions: the sealed [`Element`] trait,
//! the built-in [`ReduceOp`]s and user-defined [`Op`]s.

use std::fmt;
use std::sync::Arc;

use crate::error::CollError;

mod sealed {
    pub trait Sealed {}
}

/// A built-in reduction. All are associative and commutative; bitwise ones
/// exist for integers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum (wrapping for integers).
    Sum,
    /// Product (wrapping for integers).
    Prod,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Bitwise and (integers).
    BitAnd,
    /// Bitwise or (integers).
    BitOr,
    /// Bitwise exclusive or (integers).
    BitXor,
}

impl ReduceOp {
    /// Every built-in operation.
    pub const ALL: [ReduceOp; 7] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Min,
        ReduceOp::Max,
        ReduceOp::BitAnd,
        ReduceOp::BitOr,
        ReduceOp::BitXor,
    ];
}

/// A primitive element type that messages carry and reductions combine:
/// `u8, i8, u16, i16, u32, i32, u64, i64, f32, f64, usize` (sealed).
///
/// Elements travel as little-endian bytes; `usize` travels as 64 bits.
pub trait Element:
    sealed::Sealed + Copy + Default + PartialEq + fmt::Debug + Send + Sync + 'static
{
    /// Bytes per element on the wire.
    const SIZE: usize;
    /// The type's name, for errors.
    const NAME: &'static str;
    /// Appends `src` as little-endian bytes.
    #[doc(hidden)]
    fn encode(src: &[Self], out: &mut Vec<u8>);
    /// Fills `dst` from `src`, which holds exactly `dst.len() * SIZE` bytes.
    #[doc(hidden)]
    fn decode(dst: &mut [Self], src: &[u8]);
    /// `acc[i] = acc[i] op src[i]`; `src` holds `acc.len() * SIZE` bytes.
    #[doc(hidden)]
    fn reduce_bytes(op: ReduceOp, acc: &mut [Self], src: &[u8]) -> Result<(), CollError>;
    /// `acc[i] = acc[i] op src[i]`.
    #[doc(hidden)]
    fn reduce_slice(op: ReduceOp, acc: &mut [Self], src: &[Self]) -> Result<(), CollError>;
    /// `out[i] = a[i] op b[i]`, in one pass (`out`, `a` and `b` of one
    /// length).
    #[doc(hidden)]
    fn reduce_slice3(
        op: ReduceOp,
        out: &mut [Self],
        a: &[Self],
        b: &[Self],
    ) -> Result<(), CollError>;
    /// The wire bytes of `src` without copying, where the memory layout is
    /// the wire's (little-endian hosts; `usize` of 64 bits).
    #[doc(hidden)]
    fn wire(src: &[Self]) -> Option<&[u8]>;
    /// `dst` as wire bytes to be written in place (as [`Element::wire`]).
    #[doc(hidden)]
    fn wire_mut(dst: &mut [Self]) -> Option<&mut [u8]>;
    /// 8-byte-aligned words viewed as elements (as [`Element::wire`]).
    #[doc(hidden)]
    fn view(words: &[u64]) -> Option<&[Self]>;
    /// 8-byte-aligned words viewed as mutable elements (as [`Element::wire`]).
    #[doc(hidden)]
    fn view_mut(words: &mut [u64]) -> Option<&mut [Self]>;
    /// Wire bytes viewed as elements, where they are aligned for them (as
    /// [`Element::wire`]).
    #[doc(hidden)]
    fn view_bytes(bytes: &[u8]) -> Option<&[Self]>;
}

/// The in-place casts of [`Element`] for a type whose memory layout is the
/// wire's on little-endian hosts.
macro_rules! le_casts {
    () => {
        fn wire(src: &[Self]) -> Option<&[u8]> {
            cfg!(target_endian = "little").then(|| bytemuck::cast_slice(src))
        }
        fn wire_mut(dst: &mut [Self]) -> Option<&mut [u8]> {
            cfg!(target_endian = "little").then(|| bytemuck::cast_slice_mut(dst))
        }
        fn view(words: &[u64]) -> Option<&[Self]> {
            cfg!(target_endian = "little").then(|| bytemuck::cast_slice(words))
        }
        fn view_mut(words: &mut [u64]) -> Option<&mut [Self]> {
            cfg!(target_endian = "little").then(|| bytemuck::cast_slice_mut(words))
        }
        fn view_bytes(bytes: &[u8]) -> Option<&[Self]> {
            cfg!(target_endian = "little")
                .then(|| bytemuck::try_cast_slice(bytes).ok())
                .flatten()
        }
    };
}

macro_rules! int_apply {
    ($op:expr, $t:ty, $it:expr) => {
        match $op {
            ReduceOp::Sum => $it.for_each(|(a, b)| *a = a.wrapping_add(b)),
            ReduceOp::Prod => $it.for_each(|(a, b)| *a = a.wrapping_mul(b)),
            ReduceOp::Min => $it.for_each(|(a, b)| *a = (*a).min(b)),
            ReduceOp::Max => $it.for_each(|(a, b)| *a = (*a).max(b)),
            ReduceOp::BitAnd => $it.for_each(|(a, b)| *a &= b),
            ReduceOp::BitOr => $it.for_each(|(a, b)| *a |= b),
            ReduceOp::BitXor => $it.for_each(|(a, b)| *a ^= b),
        }
    };
}

macro_rules! float_apply {
    ($op:expr, $t:ty, $it:expr) => {
        match $op {
            ReduceOp::Sum => $it.for_each(|(a, b)| *a += b),
            ReduceOp::Prod => $it.for_each(|(a, b)| *a *= b),
            ReduceOp::Min => $it.for_each(|(a, b)| *a = a.min(b)),
            ReduceOp::Max => $it.for_each(|(a, b)| *a = a.max(b)),
            op => {
                return Err(CollError::UnsupportedOp {
                    op,
                    ty: stringify!($t),
                })
            }
        }
    };
}

/// Bytes from which a reduction runs the loop compiled for the CPU's widest
/// vectors (AVX-512 or AVX2 on x86-64, picked once at run time, as Open
/// MPI's `op/avx` does); shorter slices keep the baseline loop, inlined,
/// without the dispatch's indirect call. Element-wise, so every version
/// gives the same bits.
pub(crate) const WIDE_MIN_BYTES: usize = 512;

/// `$body` as a function `$name($args) -> Result<(), CollError>` compiled
/// for the baseline, AVX2 and AVX-512 ([`WIDE_MIN_BYTES`]).
macro_rules! wide {
    ($name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        #[multiversion::multiversion(targets(
            "x86_64+avx512f+avx512bw+avx512dq+avx512vl",
            "x86_64+avx2+fma",
        ))]
        fn $name($($arg: $ty),*) -> Result<(), CollError> $body
    };
}

/// The reductions of [`Element`] over slices, by `$apply` (`int_apply` or
/// `float_apply`).
macro_rules! slice_reductions {
    ($apply:ident, $t:ty) => {
        fn reduce_slice(op: ReduceOp, acc: &mut [Self], src: &[Self]) -> Result<(), CollError> {
            wide!(wide(op: ReduceOp, acc: &mut [$t], src: &[$t]) {
                let it = acc.iter_mut().zip(src.iter().copied());
                $apply!(op, $t, it);
                Ok(())
            });
            if acc.len() * Self::SIZE >= WIDE_MIN_BYTES {
                return wide(op, acc, src);
            }
            let it = acc.iter_mut().zip(src.iter().copied());
            $apply!(op, $t, it);
            Ok(())
        }
        fn reduce_slice3(
            op: ReduceOp,
            out: &mut [Self],
            a: &[Self],
            b: &[Self],
        ) -> Result<(), CollError> {
            // One pass: `out = a`, then `out op= b`, element by element.
            wide!(wide(op: ReduceOp, out: &mut [$t], a: &[$t], b: &[$t]) {
                let it = out.iter_mut().zip(a.iter().zip(b)).map(|(o, (x, y))| {
                    *o = *x;
                    (o, *y)
                });
                $apply!(op, $t, it);
                Ok(())
            });
            if out.len() * Self::SIZE >= WIDE_MIN_BYTES {
                return wide(op, out, a, b);
            }
            let it = out.iter_mut().zip(a.iter().zip(b)).map(|(o, (x, y))| {
                *o = *x;
                (o, *y)
            });
            $apply!(op, $t, it);
            Ok(())
        }
    };
}

/// `Element` for fixed-size numbers, reduced by `$apply` (`int_apply` or
/// `float_apply`).
macro_rules! element {
    ($apply:ident: $($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            const NAME: &'static str = stringify!($t);
            fn encode(src: &[Self], out: &mut Vec<u8>) {
                let start = out.len();
                out.resize(start + src.len() * Self::SIZE, 0);
                for (c, x) in out[start..].chunks_exact_mut(Self::SIZE).zip(src) {
                    c.copy_from_slice(&x.to_le_bytes());
                }
            }
            fn decode(dst: &mut [Self], src: &[u8]) {
                for (d, c) in dst.iter_mut().zip(src.chunks_exact(Self::SIZE)) {
                    *d = <$t>::from_le_bytes(c.try_into().expect("chunks_exact"));
                }
            }
            fn reduce_bytes(op: ReduceOp, acc: &mut [Self], src: &[u8]) -> Result<(), CollError> {
                let it = acc.iter_mut().zip(src.chunks_exact(Self::SIZE).map(|c| {
                    <$t>::from_le_bytes(c.try_into().expect("chunks_exact"))
                }));
                $apply!(op, $t, it);
                Ok(())
            }
            slice_reductions!($apply, $t);
            le_casts!();
        }
    )*};
}

element!(int_apply: u8, i8, u16, i16, u32, i32, u64, i64);
element!(float_apply: f32, f64);

impl sealed::Sealed for usize {}
impl Element for usize {
    const SIZE: usize = 8;
    const NAME: &'static str = "usize";
    fn encode(src: &[Self], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + src.len() * 8, 0);
        for (c, x) in out[start..].chunks_exact_mut(8).zip(src) {
            c.copy_from_slice(&(*x as u64).to_le_bytes());
        }
    }
    fn decode(dst: &mut [Self], src: &[u8]) {
        for (d, c) in dst.iter_mut().zip(src.chunks_exact(8)) {
            *d = u64::from_le_bytes(c.try_into().expect("chunks_exact")) as usize;
        }
    }
    fn reduce_bytes(op: ReduceOp, acc: &mut [Self], src: &[u8]) -> Result<(), CollError> {
        let it = acc.iter_mut().zip(
            src.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("chunks_exact")) as usize),
        );
        int_apply!(op, usize, it);
        Ok(())
    }
    slice_reductions!(int_apply, usize);
    fn wire(src: &[Self]) -> Option<&[u8]> {
        (cfg!(target_endian = "little") && usize::BITS == 64).then(|| bytemuck::cast_slice(src))
    }
    fn wire_mut(dst: &mut [Self]) -> Option<&mut [u8]> {
        (cfg!(target_endian = "little") && usize::BITS == 64).then(|| bytemuck::cast_slice_mut(dst))
    }
    fn view(words: &[u64]) -> Option<&[Self]> {
        (cfg!(target_endian = "little") && usize::BITS == 64).then(|| bytemuck::cast_slice(words))
    }
    fn view_mut(words: &mut [u64]) -> Option<&mut [Self]> {
        (cfg!(target_endian = "little") && usize::BITS == 64)
            .then(|| bytemuck::cast_slice_mut(words))
    }
    fn view_bytes(bytes: &[u8]) -> Option<&[Self]> {
        (cfg!(target_endian = "little") && usize::BITS == 64)
            .then(|| bytemuck::try_cast_slice(bytes).ok())
            .flatten()
    }
}

/// A user-defined reduction: `f(acc, x)` sets `acc[i] = acc[i] ⊕ x[i]`.
pub type CustomFn<T> = dyn Fn(&mut [T], &[T]) + Send + Sync;

/// A reduction: built-in or user-defined.
///
/// User-defined operations must be associative; the algorithms also
/// assume them commutative (as `MPI_Op_create(..., commute = 1)`), except
/// [`crate::Communicator::scan`], which combines in rank order.
///
/// ```
/// use rfx_collectives::{Op, ReduceOp};
/// let sum: Op<i32> = ReduceOp::Sum.into();
/// let absmax = Op::<i32>::custom(|acc, x| {
///     for (a, b) in acc.iter_mut().zip(x) { *a = (*a).abs().max(b.abs()); }
/// });
/// let mut acc = vec![1, -5];
/// absmax.apply(&mut acc, &[-3, 2]).unwrap();
/// assert_eq!(acc, [3, 5]);
/// # let _ = sum;
/// ```
#[derive(Clone)]
pub enum Op<T: Element> {
    /// A built-in operation.
    Builtin(ReduceOp),
    /// A user-defined one.
    Custom(Arc<CustomFn<T>>),
}

impl<T: Element> fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Builtin(op) => write!(f, "Op::Builtin({op:?})"),
            Op::Custom(_) => f.write_str("Op::Custom(..)"),
        }
    }
}

impl<T: Element> From<ReduceOp> for Op<T> {
    fn from(op: ReduceOp) -> Self {
        Op::Builtin(op)
    }
}

impl<T: Element> Op<T> {
    /// A user-defined operation from a closure.
    pub fn custom(f: impl Fn(&mut [T], &[T]) + Send + Sync + 'static) -> Self {
        Op::Custom(Arc::new(f))
    }

    /// `acc[i] = acc[i] ⊕ x[i]` over the common length.
    pub fn apply(&self, acc: &mut [T], x: &[T]) -> Result<(), CollError> {
        let n = acc.len().min(x.len());
        match self {
            Op::Builtin(op) => T::reduce_slice(*op, &mut acc[..n], &x[..n]),
            Op::Custom(f) => {
                f(&mut acc[..n], &x[..n]);
                Ok(())
            }
        }
    }

    /// Checks that the operation is defined for `T` (a float `BitAnd` is not).
    pub fn check(&self) -> Result<(), CollError> {
        match self {
            Op::Builtin(op) => T::reduce_slice(*op, &mut [], &[]),
            Op::Custom(_) => Ok(()),
        }
    }

    /// `acc = acc ⊕ x` (`left == false`) or `acc = x ⊕ acc` (`left == true`).
    pub(crate) fn combine_slice(
        &self,
        acc: &mut [T],
        x: &[T],
        left: bool,
    ) -> Result<(), CollError> {
        match self {
            // Built-ins are commutative: the side does not matter.
            Op::Builtin(op) => T::reduce_slice(*op, acc, x),
            Op::Custom(f) => {
                if left {
                    let mut y = x.to_vec();
                    f(&mut y, acc);
                    acc.copy_from_slice(&y);
                } else {
                    f(acc, x);
                }
                Ok(())
            }
        }
    }

    /// `out = input ⊕ x` (`left == false`) or `out = x ⊕ input`, in one
    /// pass for the built-in operations.
    pub(crate) fn combine3(
        &self,
        out: &mut [T],
        input: &[T],
        x: &[T],
        left: bool,
    ) -> Result<(), CollError> {
        match self {
            // Built-ins are commutative: the side does not matter.
            Op::Builtin(op) => T::reduce_slice3(*op, out, input, x),
            Op::Custom(_) => {
                out.copy_from_slice(input);
                self.combine_slice(out, x, left)
            }
        }
    }

    /// `acc = acc ⊕ wire` (`left == false`) or `acc = wire ⊕ acc`
    /// (`left == true`), with `wire` holding `acc.len()` encoded elements.
    pub(crate) fn combine_bytes(
        &self,
        acc: &mut [T],
        wire: &[u8],
        left: bool,
    ) -> Result<(), CollError> {
        match self {
            // Built-ins are commutative: the side does not matter.
            Op::Builtin(op) => T::reduce_bytes(*op, acc, wire),
            Op::Custom(f) => {
                let mut x = vec![T::default(); acc.len()];
                T::decode(&mut x, wire);
                if left {
                    f(&mut x, acc);
                    acc.copy_from_slice(&x);
                } else {
                    f(acc, &x);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Element>(v: &[T]) {
        let mut bytes = Vec::new();
        T::encode(v, &mut bytes);
        assert_eq!(bytes.len(), v.len() * T::SIZE);
        let mut back = vec![T::default(); v.len()];
        T::decode(&mut back, &bytes);
        assert_eq!(back, v);
    }

    #[test]
    fn encode_decode_roundtrip() {
        roundtrip(&[1u8, 2, 255]);
        roundtrip(&[-1i16, 300]);
        roundtrip(&[u64::MAX, 7]);
        roundtrip(&[1.5f32, -0.0]);
        roundtrip(&[f64::MAX, 2.25]);
        roundtrip(&[usize::MAX, 3]);
    }

    #[test]
    fn builtin_reductions() {
        let mut a = vec![3i32, -2, 12];
        let mut w = Vec::new();
        i32::encode(&[5, 7, 10], &mut w);
        let expect = [
            (ReduceOp::Sum, [8, 5, 22]),
            (ReduceOp::Prod, [15, -14, 120]),
            (ReduceOp::Min, [3, -2, 10]),
            (ReduceOp::Max, [5, 7, 12]),
            (ReduceOp::BitAnd, [3 & 5, -2 & 7, 12 & 10]),
            (ReduceOp::BitOr, [3 | 5, -2 | 7, 12 | 10]),
            (ReduceOp::BitXor, [3 ^ 5, -2 ^ 7, 12 ^ 10]),
        ];
        for (op, want) in expect {
            a.copy_from_slice(&[3, -2, 12]);
            Op::from(op).combine_bytes(&mut a, &w, false).unwrap();
            assert_eq!(a, want, "{op:?}");
        }
        assert!(matches!(
            Op::<f64>::from(ReduceOp::BitXor).check(),
            Err(CollError::UnsupportedOp { .. })
        ));
        assert!(Op::<f64>::from(ReduceOp::Max).check().is_ok());
    }

    #[test]
    fn custom_left_and_right() {
        // Non-commutative: keep the left operand.
        let first = Op::<u8>::custom(|acc, _x| {
            let _ = acc;
        });
        let mut acc = vec![1u8];
        first.combine_bytes(&mut acc, &[9], true).unwrap();
        assert_eq!(acc, [9]);
        first.combine_bytes(&mut acc, &[4], false).unwrap();
        assert_eq!(acc, [9]);
        // From an input into an output: the same sides, the input kept.
        let (input, mut out) = ([1u8, 2], [0u8; 2]);
        first.combine3(&mut out, &input, &[7, 8], true).unwrap();
        assert_eq!((out, input), ([7, 8], [1, 2]));
        first.combine3(&mut out, &input, &[7, 8], false).unwrap();
        assert_eq!(out, [1, 2]);
    }

    /// `out = a op b` in one pass agrees with `acc = a; acc op= b`, for
    /// every built-in operation and several types.
    #[test]
    fn three_operand_reductions_agree_with_in_place_ones() {
        fn check<T: Element + From<u8>>(ops: &[ReduceOp]) {
            let a: Vec<T> = (0..37u8).map(|i| T::from(i.wrapping_mul(7) % 50)).collect();
            let b: Vec<T> = (0..37u8)
                .map(|i| T::from(i.wrapping_mul(3) % 41 + 1))
                .collect();
            for &op in ops {
                let mut want = a.clone();
                T::reduce_slice(op, &mut want, &b).unwrap();
                let mut out = vec![T::default(); a.len()];
                Op::from(op).combine3(&mut out, &a, &b, false).unwrap();
                assert_eq!(out, want, "{} {op:?}", T::NAME);
            }
        }
        let floats = [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Min, ReduceOp::Max];
        check::<u8>(&ReduceOp::ALL);
        check::<i32>(&ReduceOp::ALL);
        check::<u64>(&ReduceOp::ALL);
        check::<f32>(&floats);
        check::<f64>(&floats);
        let a: Vec<usize> = (0..9).collect();
        let mut out = vec![0usize; 9];
        usize::reduce_slice3(ReduceOp::Max, &mut out, &a, &[4; 9]).unwrap();
        assert_eq!(out, [4, 4, 4, 4, 4, 5, 6, 7, 8]);
    }

    /// Long slices take the loops compiled for wide vectors (AVX2,
    /// AVX-512 where the CPU has them): the same bits as reducing one
    /// element at a time (short slices, the baseline loop), for every type
    /// and operation, floats with NaN, infinities and signed zeros
    /// included; lengths around the cutoff and with odd tails.
    #[test]
    fn wide_reductions_give_the_bits_of_element_wise_ones() {
        fn check<T: Element>(ops: &[ReduceOp], value: impl Fn(usize) -> T) {
            for n in [
                WIDE_MIN_BYTES / T::SIZE - 1,
                WIDE_MIN_BYTES / T::SIZE,
                WIDE_MIN_BYTES / T::SIZE + 7,
                4099,
            ] {
                let a: Vec<T> = (0..n).map(&value).collect();
                let b: Vec<T> = (0..n).map(|i| value(i * 7 + 3)).collect();
                for &op in ops {
                    let mut want = a.clone();
                    for (w, x) in want.iter_mut().zip(&b) {
                        T::reduce_slice(op, std::slice::from_mut(w), std::slice::from_ref(x))
                            .unwrap();
                    }
                    let bits = |v: &[T]| format!("{v:?}");
                    let mut got = a.clone();
                    T::reduce_slice(op, &mut got, &b).unwrap();
                    assert_eq!(bits(&got), bits(&want), "{} {op:?} n={n}", T::NAME);
                    let mut out = vec![T::default(); n];
                    T::reduce_slice3(op, &mut out, &a, &b).unwrap();
                    assert_eq!(bits(&out), bits(&want), "{} {op:?} n={n} (3)", T::NAME);
                }
            }
        }
        let floats = [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Min, ReduceOp::Max];
        let mix = |i: usize| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
        check::<u8>(&ReduceOp::ALL, |i| mix(i) as u8);
        check::<i8>(&ReduceOp::ALL, |i| mix(i) as i8);
        check::<u16>(&ReduceOp::ALL, |i| mix(i) as u16);
        check::<i16>(&ReduceOp::ALL, |i| mix(i) as i16);
        check::<u32>(&ReduceOp::ALL, |i| mix(i) as u32);
        check::<i32>(&ReduceOp::ALL, |i| mix(i) as i32);
        check::<u64>(&ReduceOp::ALL, mix);
        check::<i64>(&ReduceOp::ALL, |i| mix(i) as i64);
        check::<usize>(&ReduceOp::ALL, |i| mix(i) as usize);
        let special = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0, 1e308];
        let float = |i: usize| match i % 11 {
            k @ 0..=5 => special[k],
            _ => (mix(i) % 100_000) as f64 / 7.0 - 5000.0,
        };
        check::<f64>(&floats, float);
        check::<f32>(&floats, |i| float(i) as f32);
    }
}
