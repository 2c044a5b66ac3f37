//! What a ping-pong run does: sizes and iteration counts, like the OSU
//! micro-benchmarks (10 000 iterations after 1 000 warm-up below 8 KiB,
//! 1 000 after 100 above).

use serde::{Deserialize, Serialize};

/// OSU's boundary between small and large messages.
pub const LARGE: usize = 8192;

/// One size of a ping-pong run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub size: usize,
    pub warmup: u64,
    pub iters: u64,
}

impl Step {
    pub fn total(&self) -> u64 {
        self.warmup + self.iters
    }
}

/// 8 B to 1 MiB in powers of 4, plus 1 MiB itself.
pub fn default_sizes() -> Vec<usize> {
    let mut v: Vec<usize> = std::iter::successors(Some(8usize), |s| Some(s * 4))
        .take_while(|&s| s <= 1 << 20)
        .collect();
    if v.last() != Some(&(1 << 20)) {
        v.push(1 << 20);
    }
    v
}

pub fn schedule(sizes: &[usize], iters: Option<u64>, warmup: Option<u64>) -> Vec<Step> {
    sizes
        .iter()
        .map(|&size| {
            let (w, i) = if size <= LARGE {
                (1000, 10_000)
            } else {
                (100, 1000)
            };
            Step {
                size,
                warmup: warmup.unwrap_or(w),
                iters: iters.unwrap_or(i).max(1),
            }
        })
        .collect()
}

/// Parses `8,64,4k,1m`.
pub fn parse_sizes(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|t| {
            let t = t.trim().to_ascii_lowercase();
            let (num, mul) = match t.chars().last() {
                Some('k') => (&t[..t.len() - 1], 1usize << 10),
                Some('m') => (&t[..t.len() - 1], 1 << 20),
                _ => (t.as_str(), 1),
            };
            num.parse::<usize>()
                .map(|n| n * mul)
                .map_err(|e| format!("bad size {t:?}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(
            default_sizes(),
            vec![8, 32, 128, 512, 2048, 8192, 32768, 131072, 524288, 1 << 20]
        );
        assert_eq!(parse_sizes("8, 4k,1M").unwrap(), vec![8, 4096, 1 << 20]);
        assert!(parse_sizes("8,x").is_err());
        let s = schedule(&[8, 65536], None, None);
        assert_eq!(
            (s[0].warmup, s[0].iters, s[1].warmup, s[1].iters),
            (1000, 10_000, 100, 1000)
        );
    }
}
