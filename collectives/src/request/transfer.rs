//! Moving data between a task's buffers and messages.

use super::*;

/// Up to four blocks as byte slices (wire layout), or `None` when they
/// must be encoded.
pub(super) fn wire_parts<'a, T: Element, B: TaskBuf<T>>(
    buf: &'a B,
    blocks: &[Range<usize>],
) -> Option<([&'a [u8]; 4], usize)> {
    if blocks.len() > 4 {
        return None;
    }
    let mut parts: [&[u8]; 4] = [&[]; 4];
    for (p, r) in parts.iter_mut().zip(blocks) {
        *p = T::wire(buf.read(r.clone()))?;
    }
    Some((parts, blocks.len()))
}

pub(super) fn encode_blocks<T: Element, B: TaskBuf<T>>(
    buf: &B,
    blocks: &[Range<usize>],
) -> Vec<u8> {
    let n: usize = blocks.iter().map(|r| r.len()).sum();
    let mut bytes = Vec::with_capacity(n * T::SIZE);
    for r in blocks {
        T::encode(buf.read(r.clone()), &mut bytes);
    }
    bytes
}

/// Posts the blocks of `buf` to `dest`; a token if the send is borrowed
/// and not done yet.
#[allow(clippy::too_many_arguments)]
pub(super) fn post_blocks<T: Element, B: TaskBuf<T>>(
    e: &mut Engine,
    buf: &B,
    blocks: &[Range<usize>],
    dest: usize,
    ctx: u32,
    tag: u32,
    lend: Lend,
) -> Result<Option<u64>, CollError> {
    match wire_parts(buf, blocks) {
        Some((parts, n)) => e.post(dest, ctx, tag, &parts[..n], lend),
        None => {
            let bytes = encode_blocks(buf, blocks);
            e.post(dest, ctx, tag, &[&bytes], Lend::Copy)
        }
    }
}

/// Scratch words for a whole message taken from the link
/// ([`deliver_whole`]) that is not already out of the inbox: reductions
/// and decoding read it through them a chunk at a time.
const WHOLE_SCRATCH_WORDS: usize = 64;

/// [`deliver`] of a whole message taken by [`Engine::take_small`], with
/// scratch words on the stack: a few for bytes already out, more for
/// bytes still in the inbox.
pub(super) fn deliver_whole<T: Element, B: TaskBuf<T>>(
    buf: &mut B,
    blocks: &[Range<usize>],
    combine: Combine,
    op: Option<&Op<T>>,
    piece: Piece<'_>,
) -> Result<(), CollError> {
    if piece.len() <= INLINE_MAX {
        let mut words = [0u64; INLINE_MAX.div_ceil(8)];
        deliver(buf, blocks, combine, op, 0, piece, &mut words)
    } else {
        let mut words = [0u64; WHOLE_SCRATCH_WORDS];
        deliver(buf, blocks, combine, op, 0, piece, &mut words)
    }
}

/// Replaces `dst` by a whole message taken by [`Engine::take_small`]:
/// one copy where the layouts agree, else decoded through scratch words.
pub(super) fn land_whole<T: Element>(dst: &mut [T], piece: Piece<'_>) -> Result<(), CollError> {
    if let Some(bytes) = T::wire_mut(dst) {
        return piece.read_at(0, bytes).map_err(region_err);
    }
    let mut words = [0u64; WHOLE_SCRATCH_WORDS];
    land(dst, Combine::Replace, None, piece, &mut words)
}

/// Lands `piece` (payload bytes from `off`) in the element ranges
/// `blocks` of `buf`, replacing or reducing.
pub(super) fn deliver<T: Element, B: TaskBuf<T>>(
    buf: &mut B,
    blocks: &[Range<usize>],
    combine: Combine,
    op: Option<&Op<T>>,
    off: usize,
    piece: Piece<'_>,
    scratch: &mut [u64],
) -> Result<(), CollError> {
    let s = T::SIZE;
    let mut e0 = off / s;
    let mut n = piece.len() / s;
    let mut at = 0;
    let mut cum = 0;
    for r in blocks {
        if n == 0 {
            break;
        }
        let blen = r.len();
        if e0 >= cum + blen {
            cum += blen;
            continue;
        }
        let start = e0 - cum;
        let k = (blen - start).min(n);
        let range = r.start + start..r.start + start + k;
        match combine {
            Combine::ReduceFrom { back, left } => {
                let (input, dst) = buf.input_and_output(range, back)?;
                land_from(dst, input, left, op, piece.sub(at, k * s), scratch)?;
            }
            _ => land(
                buf.write(range)?,
                combine,
                op,
                piece.sub(at, k * s),
                scratch,
            )?,
        }
        at += k * s;
        e0 += k;
        n -= k;
        cum += blen;
    }
    Ok(())
}

/// A schedule's receive as a [`Sink`]: [`deliver`] into the blocks of
/// its buffer. A reducing receive stages a read request whole; where it
/// reduces the input into a part of the output no step wrote yet
/// ([`Combine::ReduceFrom`], one block), the read lands in the output
/// itself and is combined with the input there, as Open MPI's root
/// receives into its output and then reduces.
pub(super) struct Delivery<'a, T: Element, B> {
    pub(super) buf: &'a mut B,
    pub(super) blocks: &'a [Range<usize>],
    pub(super) combine: Combine,
    pub(super) op: Option<&'a Op<T>>,
}

impl<T: Element, B: TaskBuf<T>> Sink for Delivery<'_, T, B> {
    fn land(&mut self, off: usize, piece: Piece<'_>, scratch: &mut [u64]) -> Result<(), CollError> {
        deliver(
            self.buf,
            self.blocks,
            self.combine,
            self.op,
            off,
            piece,
            scratch,
        )
    }
    fn staged(&self) -> bool {
        self.op.is_some() && self.combine != Combine::Replace
    }
    fn stage(&mut self, len: usize) -> Option<&mut [u8]> {
        let (Combine::ReduceFrom { back, .. }, [r]) = (self.combine, self.blocks) else {
            return None;
        };
        if r.len() * T::SIZE != len {
            return None;
        }
        let (_, dst) = self.buf.input_and_output(r.clone(), back).ok()?;
        T::wire_mut(dst)
    }
    fn combine_staged(&mut self) -> Result<(), CollError> {
        let (Combine::ReduceFrom { back, left }, [r], Some(op)) =
            (self.combine, self.blocks, self.op)
        else {
            return Err(CollError::InvalidArgument(
                "a staged read for a receive that does not reduce into its output".into(),
            ));
        };
        let (input, dst) = self.buf.input_and_output(r.clone(), back)?;
        // `dst` holds the message: `input ⊕ message` is `dst = input ⊕ dst`.
        op.combine_slice(dst, input, !left)
    }
}

pub(super) fn region_err(source: rfx_fabric::FabricError) -> CollError {
    CollError::Fabric {
        rank: usize::MAX,
        source,
    }
}

/// Lands one piece of `dst.len()` elements in `dst`.
pub(super) fn land<T: Element>(
    dst: &mut [T],
    combine: Combine,
    op: Option<&Op<T>>,
    piece: Piece<'_>,
    scratch: &mut [u64],
) -> Result<(), CollError> {
    let left = combine == Combine::ReduceLeft;
    let op = match (combine, op) {
        (Combine::Replace, _) | (_, None) => None,
        (_, Some(op)) => Some(op),
    };
    match (piece, op) {
        (Piece::Bytes(b), None) => {
            match T::wire_mut(dst) {
                Some(bytes) => bytes.copy_from_slice(b),
                None => T::decode(dst, b),
            }
            Ok(())
        }
        // Many and aligned (a message read whole): combined as elements,
        // by the wide loops; fewer are decoded as they are combined,
        // without the check of their alignment.
        (Piece::Bytes(b), Some(op)) => match (b.len() >= WIDE_MIN_BYTES)
            .then(|| T::view_bytes(b))
            .flatten()
        {
            Some(x) => op.combine_slice(dst, x, left),
            None => op.combine_bytes(dst, b, left),
        },
        // In the inbox or the sender's memory: straight into `dst` when
        // the layouts agree, else through the scratch words.
        (piece, None) => match T::wire_mut(dst) {
            Some(bytes) => piece.read_at(0, bytes).map_err(region_err),
            None => through_scratch(dst, &piece, scratch, |_, d, words, nb| {
                T::decode(d, &bytemuck::cast_slice(words)[..nb]);
                Ok(())
            }),
        },
        (piece, Some(op)) => through_scratch(dst, &piece, scratch, |_, d, words, nb| {
            combine_read(op, d, None, words, nb, left)
        }),
    }
}

/// Bytes already out of the inbox from which [`land_from`] combines them
/// where they lie; fewer go through the scratch words like the inbox's
/// (64 B payloads measured 15% slower combined where they lie).
const ONE_PASS_BYTES_MIN: usize = 4096;

/// Lands one piece in `dst` as `dst = input ⊕ piece` (or `piece ⊕ input`
/// with `left`): one pass over each scratch-sized chunk, the input never
/// copied into `dst` first. Only receives of many bytes come here
/// ([`crate::schedule::Combine::ReduceFrom`]): kept out of line, off the
/// small messages' path through [`deliver`].
#[inline(never)]
fn land_from<T: Element>(
    dst: &mut [T],
    input: &[T],
    left: bool,
    op: Option<&Op<T>>,
    piece: Piece<'_>,
    scratch: &mut [u64],
) -> Result<(), CollError> {
    let combine = if left {
        Combine::ReduceLeft
    } else {
        Combine::Reduce
    };
    let Some(op) = op else {
        dst.copy_from_slice(input);
        return land(dst, combine, op, piece, scratch);
    };
    if let Piece::Bytes(b) = piece {
        // Bytes already out (a message read whole): combined where they
        // lie if many and aligned for `T`, else through the scratch.
        if let Some(x) = T::view_bytes(b).filter(|_| b.len() >= ONE_PASS_BYTES_MIN) {
            return op.combine3(dst, input, x, left);
        }
    }
    through_scratch(dst, &piece, scratch, |at, d, words, nb| {
        combine_read(op, d, Some(&input[at..at + d.len()]), words, nb, left)
    })
}

/// Reads `piece` into the scratch words one chunk of `dst` at a time and
/// hands `f` each chunk's first element, the chunk, and the words holding
/// its `nb` bytes.
fn through_scratch<T: Element>(
    dst: &mut [T],
    piece: &Piece<'_>,
    scratch: &mut [u64],
    mut f: impl FnMut(usize, &mut [T], &[u64], usize) -> Result<(), CollError>,
) -> Result<(), CollError> {
    let step = scratch.len() * 8 / T::SIZE;
    for (i, d) in dst.chunks_mut(step).enumerate() {
        let nb = d.len() * T::SIZE;
        let words = &mut scratch[..nb.div_ceil(8)];
        piece
            .read_at(
                i * step * T::SIZE,
                &mut bytemuck::cast_slice_mut::<u64, u8>(words)[..nb],
            )
            .map_err(region_err)?;
        f(i * step, d, words, nb)?;
    }
    Ok(())
}

/// `d = d ⊕ x` (or `d = input ⊕ x` with `input`), `x` being the `nb` wire
/// bytes in `words`: viewed as elements where the layout allows, decoded
/// otherwise.
fn combine_read<T: Element>(
    op: &Op<T>,
    d: &mut [T],
    input: Option<&[T]>,
    words: &[u64],
    nb: usize,
    left: bool,
) -> Result<(), CollError> {
    match (T::view(words), input) {
        (Some(x), Some(inp)) => op.combine3(d, inp, &x[..d.len()], left),
        (Some(x), None) => op.combine_slice(d, &x[..d.len()], left),
        (None, inp) => {
            if let Some(inp) = inp {
                d.copy_from_slice(inp);
            }
            op.combine_bytes(d, &bytemuck::cast_slice(words)[..nb], left)
        }
    }
}

pub(super) fn overlaps(a: &[Range<usize>], b: &[Range<usize>]) -> bool {
    a.iter().any(|x| {
        b.iter()
            .any(|y| !x.is_empty() && !y.is_empty() && x.start < y.end && y.start < x.end)
    })
}
