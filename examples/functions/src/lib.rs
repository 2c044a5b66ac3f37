//! Example rfx functions, exported with [`rfx_abi::export!`].
//!
//! Every function uses the extended ABI (the macro emits the `rfx_abi_<name>` marker), reads
//! little-endian inputs, and returns an output length or an `Err`, which the executor sees as
//! `status::FAILED`. The executors' integration tests (`executors/tests/abi.rs`) load this
//! library and call each function.

use rfx_abi::comm::CommOp;
use rfx_abi::Context;

/// Reads a little-endian `f64` from an 8-byte chunk.
fn f64_at(chunk: &[u8]) -> f64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(chunk);
    f64::from_le_bytes(b)
}

rfx_abi::export! {
    /// Does nothing and returns an empty output: the latency floor.
    pub fn noop(_input: &[u8], _out: &mut [u8]) -> usize {
        0
    }

    /// Copies the input to the output; fails if the output buffer is shorter.
    pub fn echo(input: &[u8], out: &mut [u8]) -> Result<usize, &'static str> {
        let dst = out.get_mut(..input.len()).ok_or("output buffer too small")?;
        dst.copy_from_slice(input);
        Ok(input.len())
    }

    /// Sums little-endian `f64`s; writes the sum as one `f64`.
    pub fn sum_f64(input: &[u8], out: &mut [u8]) -> Result<usize, &'static str> {
        if input.len() % 8 != 0 {
            return Err("input is not a whole number of f64");
        }
        let sum: f64 = input.chunks_exact(8).map(f64_at).sum();
        out.get_mut(..8)
            .ok_or("output buffer too small")?
            .copy_from_slice(&sum.to_le_bytes());
        Ok(8)
    }

    /// Multiplies two square matrices. Input: `n` as a little-endian `u32`, then A and B, each
    /// `n * n` little-endian `f64` in row-major order. Output: A·B, the same way. Fails if the
    /// input is not exactly that long or if the product does not fit in the output buffer.
    pub fn matmul(input: &[u8], out: &mut [u8]) -> Result<usize, &'static str> {
        let (n, matrices) = input.split_first_chunk::<4>().ok_or("input too short for n")?;
        let n = usize::try_from(u32::from_le_bytes(*n)).map_err(|_| "n too large")?;
        let cells = n.checked_mul(n).ok_or("n too large")?;
        let bytes = cells.checked_mul(8).ok_or("n too large")?;
        if bytes > out.len() {
            return Err("product does not fit in the output buffer");
        }
        if Some(matrices.len()) != bytes.checked_mul(2) {
            return Err("input length does not match n");
        }
        let (a, b) = matrices.split_at(bytes);
        let a: Vec<f64> = a.chunks_exact(8).map(f64_at).collect();
        let b: Vec<f64> = b.chunks_exact(8).map(f64_at).collect();
        for (i, row) in out[..bytes].chunks_exact_mut(8 * n).enumerate() {
            for (j, cell) in row.chunks_exact_mut(8).enumerate() {
                let dot: f64 = (0..n).map(|k| a[i * n + k] * b[k * n + j]).sum();
                cell.copy_from_slice(&dot.to_le_bytes());
            }
        }
        Ok(bytes)
    }

    /// Writes this instance's rank and the group size as two little-endian `u32`.
    pub fn rank_info(ctx: &Context, _input: &[u8], out: &mut [u8]) -> Result<usize, &'static str> {
        let out = out.get_mut(..8).ok_or("output buffer too small")?;
        out[..4].copy_from_slice(&ctx.rank().to_le_bytes());
        out[4..].copy_from_slice(&ctx.size().to_le_bytes());
        Ok(8)
    }

    /// The block collectives of the group's table (version 2), one byte a block: the input is
    /// `size` bytes; the output is their alltoall (byte r from rank r), then, at rank 0, every
    /// rank's first input byte (gather), then the byte rank 0 scattered to this rank (its
    /// input's byte r, plus 100).
    pub fn blocks(ctx: &Context, input: &[u8], out: &mut [u8]) -> Result<usize, String> {
        let comm = ctx.comm().ok_or("blocks runs as a group invocation")?;
        let n = comm.size() as usize;
        if input.len() != n {
            return Err(format!("{} input bytes for a group of {n}", input.len()));
        }
        let mut all = vec![0u8; n];
        comm.alltoall(input, &mut all).map_err(|e| e.to_string())?;
        let mut gathered = vec![0u8; if comm.rank() == 0 { n } else { 0 }];
        comm.gather(&input[..1], &mut gathered, 0).map_err(|e| e.to_string())?;
        let plus: Vec<u8> = input.iter().map(|b| b.wrapping_add(100)).collect();
        let mut mine = [0u8];
        comm.scatter(if comm.rank() == 0 { &plus } else { &[] }, &mut mine, 0)
            .map_err(|e| e.to_string())?;
        let len = 2 * n + 1 - if comm.rank() == 0 { 0 } else { n };
        let out = out.get_mut(..len).ok_or("output buffer too small")?;
        out[..n].copy_from_slice(&all);
        out[n..len - 1].copy_from_slice(&gathered);
        out[len - 1] = mine[0];
        Ok(len)
    }

    /// A distributed dot product, as a group invocation: each instance gets its slice of the
    /// two vectors (`n` little-endian `f64` of x, then `n` of y), computes its partial dot
    /// product and allreduces it with the other instances over the group's communicator,
    /// peer to peer. Every instance returns the full dot product (8 bytes).
    pub fn dot(ctx: &Context, input: &[u8], out: &mut [u8]) -> Result<usize, String> {
        if input.len() % 16 != 0 {
            return Err("input is not two f64 vectors of one length".into());
        }
        let (x, y) = input.split_at(input.len() / 2);
        let partial: f64 = x.chunks_exact(8).zip(y.chunks_exact(8)).map(|(a, b)| f64_at(a) * f64_at(b)).sum();
        let comm = ctx.comm().ok_or("dot runs as a group invocation")?;
        let mut total = [0.0f64];
        comm.allreduce(&[partial], &mut total, CommOp::Sum).map_err(|e| e.to_string())?;
        let out = out.get_mut(..8).ok_or("output buffer too small")?;
        out.copy_from_slice(&total[0].to_le_bytes());
        Ok(8)
    }

    /// Crashes the process with a segmentation fault, to test that a crash is contained by
    /// the executor manager (the executors' tests run it in a child process).
    pub fn crash(_input: &[u8], _out: &mut [u8]) -> usize {
        // Address 16 lies in the first page, which Linux never maps (vm.mmap_min_addr), so the
        // store faults. Not address 0: debug builds check `write_volatile` for null and abort
        // instead of faulting.
        let target = 16usize as *mut u32;
        // SAFETY: none: this deliberately writes to an unmapped address to crash, which is
        // this function's whole purpose. The volatile write is emitted as written, so the
        // process gets SIGSEGV before anything else can happen.
        unsafe { target.write_volatile(0xdead) };
        0
    }

    /// Panics, to test that the panic is caught at the ABI boundary.
    pub fn panics(_input: &[u8], _out: &mut [u8]) -> usize {
        panic!("this function panics on purpose")
    }

    /// Returns a length one past its output buffer without writing it, to test that the
    /// executor does not trust returned lengths.
    pub fn overclaim(_input: &[u8], out: &mut [u8]) -> usize {
        out.len() + 1
    }
}
