//! Reduction operations: the predefined ones on every type they apply to,
//! and user functions (`MPI_Op_create`), as an rfx [`Op`] over the element
//! type the datatype holds ([`Plan`]).

use std::ffi::c_int;

use rfx_collectives::{Op, ReduceOp};

use crate::abi::{self, Handle};
use crate::datatype::{Datatype, Kind, Pair, PairValue};
use crate::error::Failure;

/// `MPI_User_function`: `inoutvec[i] = invec[i] op inoutvec[i]`.
pub type UserFn = unsafe extern "C" fn(*mut u8, *mut u8, *mut c_int, *mut Handle);

/// An operation a handle names.
#[derive(Debug, Clone, Copy)]
pub enum MpiOp {
    /// A predefined op (its handle).
    Builtin(Handle),
    /// `MPI_Op_create`'s function and whether it commutes.
    User { f: UserFn, commute: bool },
}

/// An rfx operation over the element type of a datatype, ready for a
/// collective: the type decides the variant.
#[derive(Debug)]
pub enum Plan {
    I8(Op<i8>),
    U8(Op<u8>),
    I16(Op<i16>),
    U16(Op<u16>),
    I32(Op<i32>),
    U32(Op<u32>),
    I64(Op<i64>),
    U64(Op<u64>),
    F32(Op<f32>),
    F64(Op<f64>),
    /// Bytes, combined item by item (pairs, bools, user functions).
    Bytes(Op<u8>),
}

/// Integers: what logical and bitwise operations need.
trait Int: Copy + PartialEq + Send + Sync + 'static {
    const ZERO: Self;
    const ONE: Self;
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl Int for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
        }
    )*};
}
int!(i8, u8, i16, u16, i32, u32, i64, u64);

fn logical<T: Int + rfx_collectives::Element>(op: Handle) -> Op<T> {
    let f: fn(bool, bool) -> bool = match op {
        abi::MPI_LAND => |a, b| a && b,
        abi::MPI_LOR => |a, b| a || b,
        _ => |a, b| a != b,
    };
    Op::custom(move |acc: &mut [T], x: &[T]| {
        for (a, b) in acc.iter_mut().zip(x) {
            *a = if f(*a != T::ZERO, *b != T::ZERO) {
                T::ONE
            } else {
                T::ZERO
            };
        }
    })
}

fn arithmetic(op: Handle) -> Option<ReduceOp> {
    Some(match op {
        abi::MPI_SUM => ReduceOp::Sum,
        abi::MPI_PROD => ReduceOp::Prod,
        abi::MPI_MIN => ReduceOp::Min,
        abi::MPI_MAX => ReduceOp::Max,
        abi::MPI_BAND => ReduceOp::BitAnd,
        abi::MPI_BOR => ReduceOp::BitOr,
        abi::MPI_BXOR => ReduceOp::BitXor,
        _ => return None,
    })
}

fn is_logical(op: Handle) -> bool {
    matches!(op, abi::MPI_LAND | abi::MPI_LOR | abi::MPI_LXOR)
}

/// The rfx operation for `op` on items of `ty`, or why there is none.
pub fn plan(op: MpiOp, ty: &Datatype, ty_handle: Handle) -> Result<Plan, Failure> {
    let h = match op {
        MpiOp::User { f, .. } => return Ok(Plan::Bytes(user(f, ty.extent, ty_handle))),
        MpiOp::Builtin(h) => h,
    };
    let bad = || {
        Failure::new(
            abi::MPI_ERR_OP,
            format!("operation {h:#x} is not defined on {}", describe(ty)),
        )
    };
    macro_rules! int_plan {
        ($v:ident, $t:ty) => {
            if is_logical(h) {
                Plan::$v(logical::<$t>(h))
            } else {
                Plan::$v(Op::Builtin(arithmetic(h).ok_or_else(bad)?))
            }
        };
    }
    let float = |h| match h {
        abi::MPI_SUM | abi::MPI_PROD | abi::MPI_MIN | abi::MPI_MAX => arithmetic(h),
        _ => None,
    };
    Ok(match ty.kind {
        Kind::I8 => int_plan!(I8, i8),
        Kind::U8 => int_plan!(U8, u8),
        Kind::I16 => int_plan!(I16, i16),
        Kind::U16 => int_plan!(U16, u16),
        Kind::I32 => int_plan!(I32, i32),
        Kind::U32 => int_plan!(U32, u32),
        Kind::I64 => int_plan!(I64, i64),
        Kind::U64 => int_plan!(U64, u64),
        Kind::F32 => Plan::F32(Op::Builtin(float(h).ok_or_else(bad)?)),
        Kind::F64 => Plan::F64(Op::Builtin(float(h).ok_or_else(bad)?)),
        Kind::Bool if is_logical(h) => Plan::U8(logical::<u8>(h)),
        Kind::ComplexF32 if h == abi::MPI_SUM => Plan::F32(Op::Builtin(ReduceOp::Sum)),
        Kind::ComplexF64 if h == abi::MPI_SUM => Plan::F64(Op::Builtin(ReduceOp::Sum)),
        Kind::ComplexF32 if h == abi::MPI_PROD => Plan::F32(Op::custom(complex_prod::<f32>)),
        Kind::ComplexF64 if h == abi::MPI_PROD => Plan::F64(Op::custom(complex_prod::<f64>)),
        Kind::Pair(p) if matches!(h, abi::MPI_MINLOC | abi::MPI_MAXLOC) => {
            Plan::Bytes(loc(p, h == abi::MPI_MINLOC))
        }
        _ => return Err(bad()),
    })
}

fn describe(ty: &Datatype) -> String {
    if ty.name.is_empty() {
        format!("a derived type of {:?}", ty.kind)
    } else {
        ty.name.to_string()
    }
}

fn complex_prod<T>(acc: &mut [T], x: &[T])
where
    T: Copy + std::ops::Mul<Output = T> + std::ops::Sub<Output = T> + std::ops::Add<Output = T>,
{
    for (a, b) in acc.chunks_exact_mut(2).zip(x.chunks_exact(2)) {
        let (ar, ai, br, bi) = (a[0], a[1], b[0], b[1]);
        a[0] = ar * br - ai * bi;
        a[1] = ar * bi + ai * br;
    }
}

/// `MPI_MINLOC` / `MPI_MAXLOC`: the better value, and on a tie the
/// smaller index.
fn loc(p: Pair, min: bool) -> Op<u8> {
    let (ext, at) = (p.extent(), p.index_at());
    Op::custom(move |acc: &mut [u8], x: &[u8]| {
        for (a, b) in acc.chunks_exact_mut(ext).zip(x.chunks_exact(ext)) {
            let (va, vb) = (p.value(a), p.value(b));
            let index = |s: &[u8]| i32::from_ne_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]]);
            let take_b = match va.partial_cmp(&vb) {
                Some(std::cmp::Ordering::Equal) => index(b) < index(a),
                Some(o) => (o == std::cmp::Ordering::Greater) == min,
                None => matches!(vb, PairValue::F(f) if !f.is_nan()),
            };
            if take_b {
                a.copy_from_slice(b);
            }
        }
    })
}

/// A user function over items of `extent` bytes.
fn user(f: UserFn, extent: usize, ty: Handle) -> Op<u8> {
    Op::custom(move |acc: &mut [u8], x: &[u8]| {
        if extent == 0 {
            return;
        }
        // MPI's function computes inout = in op inout; rfx asks for
        // acc = acc op x: pass acc as `in` and a copy of x as `inout`.
        let mut out = x.to_vec();
        let n = acc.len().min(x.len()) / extent;
        crate::raw::call_user(f, acc, &mut out, n, ty);
        acc[..out.len()].copy_from_slice(&out);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datatype::predefined;

    fn ty(h: Handle) -> Datatype {
        predefined(h).expect("predefined")
    }

    #[test]
    fn ops_apply_where_the_standard_allows() {
        // MPI_SUM on MPI_CHAR, as OSU uses it.
        let Plan::I8(op) = plan(MpiOp::Builtin(abi::MPI_SUM), &ty(0x243), 0x243).unwrap() else {
            panic!("char sums as i8")
        };
        let mut acc = [1i8, 2];
        op.apply(&mut acc, &[3, 4]).unwrap();
        assert_eq!(acc, [4, 6]);
        // Bitwise on a float, arithmetic on MPI_BYTE, MINLOC on an int:
        // not defined.
        for (op, t) in [
            (abi::MPI_BAND, 0x214),
            (abi::MPI_SUM, 0x247),
            (abi::MPI_MINLOC, 0x209),
        ] {
            let e = plan(MpiOp::Builtin(op), &ty(t), t).unwrap_err();
            assert_eq!(e.class, abi::MPI_ERR_OP);
        }
        // Logical and on ints.
        let Plan::I32(op) = plan(MpiOp::Builtin(abi::MPI_LAND), &ty(0x209), 0x209).unwrap() else {
            panic!("int")
        };
        let mut acc = [0i32, 5, 7];
        op.apply(&mut acc, &[3, 0, -1]).unwrap();
        assert_eq!(acc, [0, 0, 1]);
    }

    #[test]
    fn complex_products_and_locations() {
        let Plan::F64(op) = plan(MpiOp::Builtin(abi::MPI_PROD), &ty(0x216), 0x216).unwrap() else {
            panic!("complex double")
        };
        let mut acc = [1.0, 2.0]; // 1 + 2i
        op.apply(&mut acc, &[3.0, -1.0]).unwrap(); // (1+2i)(3-i) = 5 + 5i
        assert_eq!(acc, [5.0, 5.0]);

        let Plan::Bytes(op) = plan(MpiOp::Builtin(abi::MPI_MAXLOC), &ty(0x22b), 0x22b).unwrap()
        else {
            panic!("2int")
        };
        let pairs = |v: &[(i32, i32)]| -> Vec<u8> {
            v.iter()
                .flat_map(|&(a, b)| [a.to_ne_bytes(), b.to_ne_bytes()].concat())
                .collect()
        };
        let mut acc = pairs(&[(5, 1), (7, 3), (2, 9)]);
        op.apply(&mut acc, &pairs(&[(6, 0), (7, 2), (1, 0)]))
            .unwrap();
        assert_eq!(
            acc,
            pairs(&[(6, 0), (7, 2), (2, 9)]),
            "max, then the lower index on ties"
        );
    }
}
