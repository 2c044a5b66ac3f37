//! Which algorithm a collective runs, by size and rank count: one function,
//! [`choose`], and every switch point in [`Thresholds`], so that each can be
//! set by configuration (`RFX_COLL_*`, see `docs/configuration.md`).

use crate::config::Thresholds;

/// A collective whose algorithm depends on its size or rank count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collective {
    /// Broadcast from a root.
    Bcast,
    /// Reduce to a root.
    Reduce,
    /// Reduce, result everywhere.
    Allreduce,
    /// Concatenate, result everywhere.
    Allgather,
    /// Concatenate at a root.
    Gather,
    /// Blocks from a root.
    Scatter,
    /// Inclusive prefix reduction.
    Scan,
    /// Every rank a block to every rank.
    Alltoall,
}

/// An algorithm [`choose`] picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// A binomial tree rooted at the root.
    Binomial,
    /// A pipelined chain of chunks of this many bytes.
    Chain {
        /// Bytes per chunk.
        chunk: usize,
    },
    /// Recursive doubling (with the non-power-of-two fix-up).
    RecursiveDoubling,
    /// Rabenseifner's reduce-scatter then allgather.
    Rabenseifner,
    /// A ring.
    Ring,
    /// Straight to or from the root, or from every rank to every rank at
    /// once.
    Linear,
    /// Pairwise exchange, one peer per round.
    Pairwise,
}

/// The algorithm of `op` over `ranks` ranks, for `bytes` per rank (per
/// block for gather, scatter, allgather and alltoall), and for `count`
/// elements when the algorithm needs at least one per rank.
/// `oversubscribed`: this host has more ranks than cores; then a bcast or
/// reduce of at most `RFX_COLL_FLAT_MAX` bytes over up to
/// `RFX_COLL_LINEAR_MAX_RANKS` ranks goes straight from or to the root,
/// since each level of a binomial tree waits for its ranks to be
/// scheduled. On 4 ranks of 2 vCPUs: bcast 8 B 0.51 → 0.24 µs, reduce 8 B
/// 1.74 → 1.08 µs, 4 KiB 2.44 → 1.83 µs; above, the root's serial sends
/// lose (bcast 16 KiB 2.5 → 4.2 µs).
pub fn choose(
    op: Collective,
    bytes: usize,
    count: usize,
    ranks: usize,
    oversubscribed: bool,
    t: &Thresholds,
) -> Algorithm {
    use Algorithm::*;
    let flat = oversubscribed && ranks <= t.linear_max_ranks && bytes <= t.flat_max;
    match op {
        Collective::Bcast if bytes >= t.bcast_pipeline_min && ranks > 2 => Chain {
            chunk: t.pipeline_chunk,
        },
        Collective::Bcast if flat => Linear,
        Collective::Bcast => Binomial,
        // On 2 ranks halving only adds a round: the root reads the peer's
        // whole message in place, or combines as the sender's copy into
        // its inbox arrives.
        Collective::Reduce
            if bytes >= t.reduce_halving_min
                && ranks > 2
                && ranks.is_power_of_two()
                && count >= ranks =>
        {
            Rabenseifner
        }
        Collective::Reduce if bytes >= t.reduce_pipeline_min && ranks > 2 => Chain {
            chunk: t.pipeline_chunk,
        },
        Collective::Reduce if flat => Linear,
        Collective::Reduce => Binomial,
        Collective::Allreduce if bytes < t.allreduce_large_min || count < ranks => {
            RecursiveDoubling
        }
        Collective::Allreduce if bytes < t.allreduce_ring_min || ranks.is_power_of_two() => {
            Rabenseifner
        }
        Collective::Allreduce => Ring,
        Collective::Allgather if bytes >= t.allgather_ring_min => Ring,
        Collective::Allgather => RecursiveDoubling,
        Collective::Gather | Collective::Scatter
            if ranks <= t.linear_max_ranks || bytes >= t.linear_block_min =>
        {
            Linear
        }
        Collective::Gather | Collective::Scatter => Binomial,
        Collective::Scan if ranks <= t.scan_chain_max_ranks => Chain { chunk: 0 },
        Collective::Scan => RecursiveDoubling,
        Collective::Alltoall if bytes < t.alltoall_pairwise_min => Linear,
        Collective::Alltoall => Pairwise,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_switch_point_is_where_the_thresholds_say() {
        let t = Thresholds::default();
        let c = |op, bytes, ranks| choose(op, bytes, bytes / 8, ranks, false, &t);
        let chain = Algorithm::Chain {
            chunk: t.pipeline_chunk,
        };
        for op in [Collective::Bcast, Collective::Reduce] {
            let min = if op == Collective::Bcast {
                t.bcast_pipeline_min
            } else {
                t.reduce_pipeline_min
            };
            assert_eq!(c(op, min - 8, 4), Algorithm::Binomial);
            assert_eq!(c(op, min, 4), chain);
            // Two ranks: the tree is the chain.
            assert_eq!(c(op, min, 2), Algorithm::Binomial);
        }
        let r = Collective::Reduce;
        let h = t.reduce_halving_min;
        assert_eq!(c(r, h - 8, 4), chain);
        assert_eq!(c(r, h, 4), Algorithm::Rabenseifner);
        assert_eq!(c(r, h, 8), Algorithm::Rabenseifner);
        assert_eq!(c(r, h, 6), chain, "not a power of two");
        assert_eq!(c(r, h, 2), Algorithm::Binomial, "two ranks");
        let ar = Collective::Allreduce;
        assert_eq!(
            c(ar, t.allreduce_large_min - 8, 4),
            Algorithm::RecursiveDoubling
        );
        assert_eq!(c(ar, t.allreduce_large_min, 4), Algorithm::Rabenseifner);
        assert_eq!(c(ar, t.allreduce_ring_min, 4), Algorithm::Rabenseifner);
        assert_eq!(c(ar, t.allreduce_ring_min, 6), Algorithm::Ring);
        assert_eq!(
            choose(ar, t.allreduce_ring_min, 3, 6, false, &t),
            Algorithm::RecursiveDoubling,
            "fewer elements than ranks"
        );
        let ag = Collective::Allgather;
        assert_eq!(
            c(ag, t.allgather_ring_min - 8, 4),
            Algorithm::RecursiveDoubling
        );
        assert_eq!(c(ag, t.allgather_ring_min, 4), Algorithm::Ring);
        for op in [Collective::Gather, Collective::Scatter] {
            assert_eq!(c(op, 8, t.linear_max_ranks), Algorithm::Linear);
            assert_eq!(c(op, 8, t.linear_max_ranks + 1), Algorithm::Binomial);
            assert_eq!(c(op, t.linear_block_min, 64), Algorithm::Linear);
        }
        assert_eq!(
            c(Collective::Scan, 8, t.scan_chain_max_ranks),
            Algorithm::Chain { chunk: 0 }
        );
        assert_eq!(
            c(Collective::Scan, 8, t.scan_chain_max_ranks + 1),
            Algorithm::RecursiveDoubling
        );
        let a2a = Collective::Alltoall;
        assert_eq!(c(a2a, t.alltoall_pairwise_min - 8, 4), Algorithm::Linear);
        assert_eq!(c(a2a, t.alltoall_pairwise_min, 4), Algorithm::Pairwise);
    }

    #[test]
    fn oversubscribed_small_rooted_collectives_run_flat() {
        let t = Thresholds::default();
        for op in [Collective::Bcast, Collective::Reduce] {
            assert_eq!(choose(op, 8, 1, 4, true, &t), Algorithm::Linear);
            let (f, above) = (t.flat_max, t.flat_max + 8);
            assert_eq!(choose(op, f, f / 8, 4, true, &t), Algorithm::Linear);
            assert_eq!(
                choose(op, above, above / 8, 4, true, &t),
                Algorithm::Binomial
            );
            assert_eq!(choose(op, 8, 1, 4, false, &t), Algorithm::Binomial);
            let many = t.linear_max_ranks + 1;
            assert_eq!(choose(op, 8, 1, many, true, &t), Algorithm::Binomial);
        }
        // Large ones keep their pipelines.
        let big = t.bcast_pipeline_min;
        assert!(matches!(
            choose(Collective::Bcast, big, big / 8, 4, true, &t),
            Algorithm::Chain { .. }
        ));
        // The others do not change.
        assert_eq!(
            choose(Collective::Allreduce, 8, 1, 4, true, &t),
            Algorithm::RecursiveDoubling
        );
    }

    #[test]
    fn configuration_moves_the_switch_points() {
        let t = Thresholds {
            bcast_pipeline_min: 64,
            alltoall_pairwise_min: 16,
            linear_max_ranks: 2,
            ..Thresholds::default()
        };
        assert_eq!(
            choose(Collective::Bcast, 64, 8, 4, false, &t),
            Algorithm::Chain {
                chunk: t.pipeline_chunk
            }
        );
        assert_eq!(
            choose(Collective::Alltoall, 16, 2, 4, false, &t),
            Algorithm::Pairwise
        );
        assert_eq!(
            choose(Collective::Gather, 8, 1, 3, false, &t),
            Algorithm::Binomial
        );
    }
}
