//! Datatypes: the predefined ones of the standard ABI (handle, name, size,
//! extent, and what reductions see in them) and contiguous derived types.
//! Data always travels as its extent in bytes: rfx runs between hosts of
//! one architecture, so no conversion is needed.

use std::borrow::Cow;

use crate::abi::Handle;

/// What a reduction sees in an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    /// C `bool` (one byte, 0 or 1): logical operations only.
    Bool,
    /// Complex numbers of two `f32`.
    ComplexF32,
    /// Complex numbers of two `f64`.
    ComplexF64,
    /// A (value, index) pair of `MPI_MINLOC` / `MPI_MAXLOC`.
    Pair(Pair),
    /// No arithmetic: `MPI_BYTE`, `MPI_PACKED`, `long double`, Fortran
    /// logicals: moved, never reduced by a predefined op.
    Opaque,
}

/// The value of a (value, `int` index) pair type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    /// `MPI_FLOAT_INT`.
    Float,
    /// `MPI_DOUBLE_INT`.
    Double,
    /// `MPI_LONG_INT`.
    Long,
    /// `MPI_2INT`.
    Int,
    /// `MPI_SHORT_INT`.
    Short,
}

impl Pair {
    /// Bytes of one pair in memory (its C struct, padding included).
    pub fn extent(self) -> usize {
        match self {
            Pair::Float | Pair::Int | Pair::Short => 8,
            Pair::Double | Pair::Long => 16,
        }
    }

    /// Offset of the `int` index in the struct.
    pub fn index_at(self) -> usize {
        match self {
            Pair::Float | Pair::Int | Pair::Short => 4,
            Pair::Double | Pair::Long => 8,
        }
    }

    /// The value as `f64` (exact for every value type here but `long`
    /// beyond 2^53, compared as `i128` instead).
    pub fn value(self, b: &[u8]) -> PairValue {
        let a4 = |o: usize| [b[o], b[o + 1], b[o + 2], b[o + 3]];
        let a8 = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            x
        };
        match self {
            Pair::Float => PairValue::F(f64::from(f32::from_ne_bytes(a4(0)))),
            Pair::Double => PairValue::F(f64::from_ne_bytes(a8(0))),
            Pair::Long => PairValue::I(i64::from_ne_bytes(a8(0))),
            Pair::Int => PairValue::I(i64::from(i32::from_ne_bytes(a4(0)))),
            Pair::Short => PairValue::I(i64::from(i16::from_ne_bytes([b[0], b[1]]))),
        }
    }
}

/// A pair's value, comparable.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub enum PairValue {
    /// A floating value.
    F(f64),
    /// An integer value.
    I(i64),
}

/// A datatype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datatype {
    /// `MPI_Type_get_name`'s answer.
    pub name: Cow<'static, str>,
    /// `MPI_Type_size`: bytes of data in one item (padding excluded).
    pub size: usize,
    /// Bytes one item spans in memory.
    pub extent: usize,
    /// From the first data byte of an item to its last
    /// (`MPI_Type_get_true_extent`).
    pub true_extent: usize,
    /// The data of one item as (offset, length) when it has holes (the
    /// padding of a pair type); empty when its extent is all data. Holes
    /// travel with the data but are never written into a caller's buffer.
    pub segments: Vec<(usize, usize)>,
    /// What each base element is.
    pub kind: Kind,
    /// Base elements in one item (1 for predefined types).
    pub per_item: usize,
    /// Predefined: never freed.
    pub predefined: bool,
}

impl Datatype {
    /// Bytes that `count` items span.
    pub fn span(&self, count: usize) -> Option<usize> {
        self.extent.checked_mul(count)
    }

    /// `count` items of this type, contiguous (`MPI_Type_contiguous`).
    pub fn contiguous(&self, count: usize) -> Option<Datatype> {
        let extent = self.extent.checked_mul(count)?;
        let segments = if self.segments.is_empty() {
            Vec::new()
        } else {
            let mut v = Vec::with_capacity(self.segments.len().checked_mul(count)?);
            for k in 0..count {
                v.extend(self.segments.iter().map(|&(o, l)| (k * self.extent + o, l)));
            }
            v
        };
        Some(Datatype {
            name: Cow::Borrowed(""),
            size: self.size.checked_mul(count)?,
            extent,
            true_extent: match count {
                0 => 0,
                n => (n - 1) * self.extent + self.true_extent,
            },
            segments,
            kind: self.kind,
            per_item: self.per_item.checked_mul(count)?,
            predefined: false,
        })
    }

    /// Writes the data bytes of `src` (whole items of this type) into
    /// `dst`, leaving the holes of `dst` as they were.
    pub fn deliver(&self, dst: &mut [u8], src: &[u8]) {
        let n = dst.len().min(src.len());
        if self.segments.is_empty() || self.extent == 0 {
            dst[..n].copy_from_slice(&src[..n]);
            return;
        }
        for item in (0..n).step_by(self.extent) {
            for &(o, l) in &self.segments {
                let (a, b) = (item + o, (item + o + l).min(n));
                if a < b {
                    dst[a..b].copy_from_slice(&src[a..b]);
                }
            }
        }
    }

    /// Runs `f` on a buffer that receives into `dst`: `dst` itself, or
    /// for a type with holes a copy whose data bytes go back after.
    pub fn receive<R>(&self, dst: &mut [u8], f: impl FnOnce(&mut [u8]) -> R) -> R {
        if self.segments.is_empty() {
            return f(dst);
        }
        let mut tmp = dst.to_vec();
        let r = f(&mut tmp);
        self.deliver(dst, &tmp);
        r
    }
}

macro_rules! predefined {
    ($( $handle:literal $name:ident $size:literal $extent:literal $kind:expr; )*) => {
        /// The predefined datatype of `handle`, if it is one.
        pub fn predefined(handle: Handle) -> Option<Datatype> {
            let (name, size, extent, kind) = match handle {
                $( $handle => (stringify!($name), $size, $extent, $kind), )*
                _ => return None,
            };
            // The pairs with padding: (value, int) at their C offsets.
            let segments = match kind {
                Pair(p) if size < extent => vec![(0, p.index_at().min(size - 4)), (p.index_at(), 4)],
                Opaque if handle == 0x22d => vec![(0, 16), (16, 4)],
                _ => Vec::new(),
            };
            let true_extent = segments.last().map_or(extent, |&(o, l)| o + l);
            Some(Datatype {
                name: Cow::Borrowed(name),
                size,
                extent,
                true_extent,
                segments,
                kind,
                per_item: 1,
                predefined: true,
            })
        }

        /// The predefined datatype of `handle`, from a table built once (no
        /// construction per call: this is on every call's path).
        pub fn predefined_ref(handle: Handle) -> Option<&'static Datatype> {
            static TABLE: std::sync::OnceLock<Vec<Option<Datatype>>> = std::sync::OnceLock::new();
            let t = TABLE.get_or_init(|| (0x200..0x300).map(predefined).collect());
            t.get(handle.checked_sub(0x200)?)?.as_ref()
        }

        /// Every predefined datatype handle.
        pub const PREDEFINED: &[Handle] = &[$( $handle ),*];
    };
}

use Kind::*;

// Sizes and extents of the x86-64 / aarch64 Linux ABI (LP64), as MPICH
// reports them. Pair types: the size excludes the struct's padding.
predefined! {
    0x201 MPI_AINT 8 8 I64;
    0x202 MPI_COUNT 8 8 I64;
    0x203 MPI_OFFSET 8 8 I64;
    0x207 MPI_PACKED 1 1 Opaque;
    0x208 MPI_SHORT 2 2 I16;
    0x209 MPI_INT 4 4 I32;
    0x20a MPI_LONG 8 8 I64;
    0x20b MPI_LONG_LONG 8 8 I64;
    0x20c MPI_UNSIGNED_SHORT 2 2 U16;
    0x20d MPI_UNSIGNED 4 4 U32;
    0x20e MPI_UNSIGNED_LONG 8 8 U64;
    0x20f MPI_UNSIGNED_LONG_LONG 8 8 U64;
    0x210 MPI_FLOAT 4 4 F32;
    0x212 MPI_C_FLOAT_COMPLEX 8 8 ComplexF32;
    0x213 MPI_CXX_FLOAT_COMPLEX 8 8 ComplexF32;
    0x214 MPI_DOUBLE 8 8 F64;
    0x216 MPI_C_DOUBLE_COMPLEX 16 16 ComplexF64;
    0x217 MPI_CXX_DOUBLE_COMPLEX 16 16 ComplexF64;
    0x218 MPI_LOGICAL 4 4 Opaque;
    0x219 MPI_INTEGER 4 4 I32;
    0x21a MPI_REAL 4 4 F32;
    0x21b MPI_COMPLEX 8 8 ComplexF32;
    0x21c MPI_DOUBLE_PRECISION 8 8 F64;
    0x21d MPI_DOUBLE_COMPLEX 16 16 ComplexF64;
    0x21e MPI_CHARACTER 1 1 Opaque;
    0x220 MPI_LONG_DOUBLE 16 16 Opaque;
    0x224 MPI_C_LONG_DOUBLE_COMPLEX 32 32 Opaque;
    0x225 MPI_CXX_LONG_DOUBLE_COMPLEX 32 32 Opaque;
    0x228 MPI_FLOAT_INT 8 8 Pair(Pair::Float);
    0x229 MPI_DOUBLE_INT 12 16 Pair(Pair::Double);
    0x22a MPI_LONG_INT 12 16 Pair(Pair::Long);
    0x22b MPI_2INT 8 8 Pair(Pair::Int);
    0x22c MPI_SHORT_INT 6 8 Pair(Pair::Short);
    0x22d MPI_LONG_DOUBLE_INT 20 32 Opaque;
    0x230 MPI_2REAL 8 8 Opaque;
    0x231 MPI_2DOUBLE_PRECISION 16 16 Opaque;
    0x232 MPI_2INTEGER 8 8 Opaque;
    0x238 MPI_C_BOOL 1 1 Bool;
    0x239 MPI_CXX_BOOL 1 1 Bool;
    0x23c MPI_WCHAR 4 4 Opaque;
    0x240 MPI_INT8_T 1 1 I8;
    0x241 MPI_UINT8_T 1 1 U8;
    0x243 MPI_CHAR 1 1 I8;
    0x244 MPI_SIGNED_CHAR 1 1 I8;
    0x245 MPI_UNSIGNED_CHAR 1 1 U8;
    0x247 MPI_BYTE 1 1 Opaque;
    0x248 MPI_INT16_T 2 2 I16;
    0x249 MPI_UINT16_T 2 2 U16;
    0x250 MPI_INT32_T 4 4 I32;
    0x251 MPI_UINT32_T 4 4 U32;
    0x258 MPI_INT64_T 8 8 I64;
    0x259 MPI_UINT64_T 8 8 U64;
    0x2c0 MPI_LOGICAL1 1 1 Opaque;
    0x2c1 MPI_INTEGER1 1 1 I8;
    0x2c8 MPI_LOGICAL2 2 2 Opaque;
    0x2c9 MPI_INTEGER2 2 2 I16;
    0x2ca MPI_REAL2 2 2 Opaque;
    0x2d0 MPI_LOGICAL4 4 4 Opaque;
    0x2d1 MPI_INTEGER4 4 4 I32;
    0x2d2 MPI_REAL4 4 4 F32;
    0x2d3 MPI_COMPLEX4 4 4 Opaque;
    0x2d8 MPI_LOGICAL8 8 8 Opaque;
    0x2d9 MPI_INTEGER8 8 8 I64;
    0x2da MPI_REAL8 8 8 F64;
    0x2db MPI_COMPLEX8 8 8 ComplexF32;
    0x2e0 MPI_LOGICAL16 16 16 Opaque;
    0x2e1 MPI_INTEGER16 16 16 Opaque;
    0x2e2 MPI_REAL16 16 16 Opaque;
    0x2e3 MPI_COMPLEX16 16 16 ComplexF64;
    0x2eb MPI_COMPLEX32 32 32 Opaque;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predefined_types_have_names_and_sizes() {
        for &h in PREDEFINED {
            let t = predefined(h).expect("listed");
            assert!(t.name.starts_with("MPI_"), "{h:#x}");
            assert!(t.size >= 1 && t.size <= t.extent, "{}", t.name);
        }
        let di = predefined(0x229).expect("MPI_DOUBLE_INT");
        assert_eq!((di.size, di.extent), (12, 16));
        assert_eq!(predefined(0x200), None, "MPI_DATATYPE_NULL is no type");
        let c = predefined(0x209)
            .and_then(|t| t.contiguous(3))
            .expect("3 ints");
        assert_eq!(
            (c.size, c.extent, c.per_item, c.kind),
            (12, 12, 3, Kind::I32)
        );
    }
}
