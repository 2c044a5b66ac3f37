//! rfx-collectives: an MPI-like communicator over [`rfx_fabric`] endpoints.
//!
//! A [`Communicator`] holds one fabric [`rfx_fabric::Endpoint`] per peer
//! (shm on one host, tcp across hosts, as the fabric's selection decides;
//! `RFX_TRANSPORT` forces one) and offers:
//!
//! - point to point: tagged [`Communicator::send`] / [`Communicator::recv`]
//!   (any source with [`Source::Any`], any tag with [`TagMatch::Any`]),
//!   [`Communicator::sendrecv`], non-blocking [`Communicator::isend`] /
//!   [`Communicator::irecv`] returning a [`Request`];
//! - collectives, each blocking and non-blocking (`i` prefix, the request
//!   hands the buffer back): barrier, bcast, reduce, allreduce, gather,
//!   scatter, allgather, reduce_scatter (equal blocks), alltoall, scan,
//!   exscan;
//! - reductions ([`ReduceOp`]: sum, prod, min, max, bitwise) over the
//!   [`Element`] types `u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 usize`, and
//!   user-defined ones ([`Op::custom`]);
//! - sub-communicators: [`Communicator::split`] and [`Communicator::dup`]
//!   reuse the parent's endpoints under a new context id;
//! - device memory ([`device::DeviceVec`] on a GPU, feature `cuda`): bcast,
//!   reduce, allreduce, allgather, reduce_scatter, send and recv, staged in
//!   pipelined chunks through pinned host memory and reduced on the device
//!   ([`device`]).
//!
//! Every operation is bounded: a rank that dies makes the others fail with
//! [`CollError::PeerGone`] naming it, or [`CollError::Timeout`] after the
//! op timeout without progress, never a hang.
//!
//! # Starting ranks
//!
//! [`Communicator::from_env`] reads the launcher's variables, meets the
//! other ranks at a rendezvous (hosted by rank 0 unless a launcher hosts
//! it) and wires every pair. `rfx run` is the launcher (the repository's
//! `examples/allreduce.rs` is an MPI-like app):
//!
//! ```sh
//! cargo build --release --example allreduce
//! cargo run --release -- run -n 4 target/release/examples/allreduce
//! # or by hand, rank 0 hosting the rendezvous:
//! for r in 0 1 2 3; do
//!   RFX_RANK=$r RFX_SIZE=4 RFX_RENDEZVOUS=127.0.0.1:7000 \
//!     target/release/examples/allreduce &
//! done; wait
//! ```
//!
//! `rfx-bench coll` measures every collective OSU-style, next to an MPI
//! (`scripts/coll-vs-mpi.sh`).
//!
//! Under Slurm (`srun -n 4 prog`) or Open MPI (`mpirun -n 4 prog`) set only
//! `RFX_RENDEZVOUS` to an address of the node of rank 0. Programs that
//! know their rank otherwise (executors of a function group) call
//! [`Communicator::join`] with a [`JoinOptions`]; a launcher serves the
//! [`Rendezvous`] itself and sets `RFX_RENDEZVOUS_EXTERNAL=1`.
//!
//! # Environment
//!
//! [`Communicator::from_env`] reads the rank and size (`RFX_RANK`/`RFX_SIZE`,
//! else Slurm's, Open MPI's or PMI's), `RFX_RENDEZVOUS`,
//! `RFX_RENDEZVOUS_EXTERNAL`, `RFX_JOB_KEY`, `RFX_BIND_ADDR` and
//! `RFX_BOOTSTRAP_TIMEOUT_MS`; [`CollConfig::from_env`] the `RFX_COLL_*`
//! settings (timeout, progress, window, fragment, algorithm thresholds);
//! the fabric its own. Their meanings and defaults are in one table for the
//! whole workspace, `docs/configuration.md` in the repository, and the
//! algorithms in `docs/collectives.md`.
//!
//! # Algorithms
//!
//! Every schedule is pure code in [`schedule`], checked on its own by
//! simulating all ranks in memory. Thresholds (bytes of one rank's
//! buffer) are in [`Thresholds`], each overridable by its variable:
//!
//! | collective | algorithm | when |
//! |---|---|---|
//! | barrier | dissemination | a core per rank |
//! | barrier | linear (to rank 0, which releases all) | more ranks on the host than cores (`RFX_COLL_CORES`) |
//! | bcast, reduce | linear (straight from / to the root) | more ranks on the host than cores, up to `RFX_COLL_FLAT_MAX` (4 KiB) and 8 ranks |
//! | bcast | binomial tree | < `RFX_COLL_BCAST_PIPELINE_MIN` (256 KiB) or 2 ranks |
//! | bcast | pipelined chain, chunks of `RFX_COLL_PIPELINE_CHUNK` (64 KiB) | otherwise |
//! | reduce | binomial tree | < `RFX_COLL_REDUCE_PIPELINE_MIN` (256 KiB) or 2 ranks |
//! | reduce | pipelined chain | otherwise |
//! | allreduce | recursive doubling (non-power-of-two fix-up) | < `RFX_COLL_ALLREDUCE_LARGE_MIN` (32 KiB) or fewer elements than ranks |
//! | allreduce | Rabenseifner (recursive-halving reduce-scatter + recursive-doubling allgather) | < `RFX_COLL_ALLREDUCE_RING_MIN` (4 MiB), or a power-of-two rank count |
//! | allreduce | ring (reduce-scatter + allgather) | otherwise |
//! | gather, scatter | linear (straight to / from the root) | up to 8 ranks, or blocks of 16 KiB or more |
//! | gather, scatter | binomial tree | otherwise |
//! | allgather | recursive doubling (fix-up) | < `RFX_COLL_ALLGATHER_RING_MIN` (64 KiB) |
//! | allgather | ring | otherwise |
//! | reduce_scatter | ring | always |
//! | alltoall | linear (every send posted at once, then the receives) | blocks < 256 KiB |
//! | alltoall | pairwise exchange | otherwise |
//! | scan | chain (rank i-1 to rank i), in rank order | up to 4 ranks |
//! | scan | recursive doubling (Hillis-Steele), in rank order | otherwise |
//! | exscan | recursive doubling, then a shift by one rank | always |
//!
//! # Data path
//!
//! Messages go one-sided ([`rfx_fabric::Endpoint::write_imm`]): at the
//! handshake each rank exposes to each peer an *inbox* (a registered
//! region of `RFX_COLL_WINDOW` bytes), and a sender writes straight from
//! the caller's buffer into the receiver's inbox, used as a ring; the
//! receiver copies (or reduces) straight from its inbox into the caller's
//! buffer, and returns the space as credit. On shm that is one copy on each
//! side, no allocation and no encoding per message (elements are cast in
//! place on little-endian hosts). Small messages travel in one write with
//! their 16-byte header; larger ones as a header and chunks of at most an
//! eighth of the window, consumed as they arrive, so a large message
//! pipelines through the two cores. Blocking collectives send from the
//! caller's buffer until done (the root of a small bcast returns once its
//! writes are posted); non-blocking ones copy what the window does not
//! take. Messages nobody waits for are copied out of the inbox when it
//! runs short, so a sender never waits on a receiver that is busy
//! elsewhere, and two ranks sending to each other never deadlock. The
//! engine is shared by a process's communicators under a spin lock (one
//! atomic operation to take it). Hot waits with a core per rank never give
//! their core away (as MPI's busy polling); with more ranks than the host
//! has CPUs they yield on every empty sweep.
//!
//! Between processes of one host that may read each other's memory
//! ([`rfx_fabric::cma`]), messages of `RFX_COLL_SINGLE_COPY_MIN` bytes
//! (16 KiB; 8 times that with more ranks than cores) or more from blocking sends, held-buffer sends and the blocking
//! collectives go as *read requests*: the receiver copies them straight
//! from the sender's buffer into its own, one copy instead of two, and the
//! send completes when it has (reductions: up to 256 KiB, read whole before
//! the combining, and not in pairwise exchanges; see docs/collectives.md).
//! A bcast's or scatter's leaf, and the receiver of a blocking `send`,
//! shares a request of `RFX_COLL_SHARE_MIN` bytes (128 KiB) or more with
//! the sender: the sender writes the first half into the receiver's buffer
//! while the receiver reads the second. A receiver waiting
//! on other messages reads them out as it spills. Over verbs and ofi,
//! from `RFX_COLL_LEND_MIN` bytes (256 KiB), the request names loans of
//! the sender's buffer ([`rfx_fabric::Endpoint::lend`]) that the receiver
//! reads one-sided (RDMA READ, `fi_read`) straight into its own buffer:
//! no copy on either side.
//!
//! # Example
//!
//! Ranks as threads of one process (programs use one process per rank):
//!
//! ```
//! use rfx_collectives::{CollConfig, Communicator, JoinOptions, ReduceOp, Rendezvous};
//! use std::time::Duration;
//!
//! let rv = Rendezvous::bind("127.0.0.1:0".parse().unwrap(), 2, b"key".to_vec())?;
//! let addr = rv.local_addr()?;
//! let server = rv.spawn(Duration::from_secs(20));
//! let ranks: Vec<_> = (0..2).map(|rank| std::thread::spawn(move || {
//!     let mut comm = Communicator::join(JoinOptions {
//!         rank, size: 2, rendezvous: addr, key: b"key".to_vec(), bind: None,
//!         config: CollConfig::default(),
//!     })?;
//!     let mut v = vec![rank as i64 + 1; 4];
//!     comm.allreduce(&mut v, ReduceOp::Sum)?;
//!     assert_eq!(v, [3; 4]);
//!     let mut b = if rank == 1 { vec![7u8; 3] } else { vec![0; 3] };
//!     comm.bcast(&mut b, 1)?;
//!     assert_eq!(b, [7; 3]);
//!     Ok::<(), rfx_collectives::CollError>(())
//! })).collect();
//! for r in ranks { r.join().unwrap()?; }
//! server.join().unwrap()?;
//! # Ok::<(), rfx_collectives::CollError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod bootstrap;
mod comm;
mod config;
pub mod device;
mod element;
mod engine;
mod error;
mod matching;
mod request;
pub mod schedule;
mod wire;

pub use bootstrap::env::LaunchEnv;
pub use bootstrap::{JoinOptions, Rendezvous};
pub use comm::Communicator;
pub use config::{CollConfig, Thresholds};
pub use element::{CustomFn, Element, Op, ReduceOp};
pub use engine::EngineStats;
pub use error::CollError;
pub use matching::{Source, Status, TagMatch};
pub use request::{wait_all, Request};
