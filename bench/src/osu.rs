//! The OSU Micro-Benchmarks as `rfx-bench mpi` runs them: which binaries,
//! how to read what they print. Pure; the driver is `cmd::mpi`.

/// The benchmarks: (binary, folder under the OSU tree, unit).
pub(crate) const BENCHMARKS: &[(&str, &str, Unit)] = &[
    ("osu_latency", "c/mpi/pt2pt/standard", Unit::Us),
    ("osu_bw", "c/mpi/pt2pt/standard", Unit::MBps),
    ("osu_barrier", "c/mpi/collective/blocking", Unit::Us),
    ("osu_bcast", "c/mpi/collective/blocking", Unit::Us),
    ("osu_reduce", "c/mpi/collective/blocking", Unit::Us),
    ("osu_allreduce", "c/mpi/collective/blocking", Unit::Us),
    ("osu_gather", "c/mpi/collective/blocking", Unit::Us),
    ("osu_scatter", "c/mpi/collective/blocking", Unit::Us),
    ("osu_allgather", "c/mpi/collective/blocking", Unit::Us),
    ("osu_alltoall", "c/mpi/collective/blocking", Unit::Us),
];

/// What a benchmark reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Average latency, µs: lower is better.
    Us,
    /// Bandwidth, MB/s: higher is better.
    MBps,
}

impl Unit {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Unit::Us => "us",
            Unit::MBps => "MB/s",
        }
    }
}

/// The folder and unit of `name`.
pub(crate) fn find(name: &str) -> Option<(&'static str, Unit)> {
    BENCHMARKS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, dir, unit)| (dir, unit))
}

/// The (size, figure) rows of OSU's output; a benchmark without sizes
/// (`osu_barrier`) gives size 0. Header lines (`#`) and anything that is
/// not numbers are skipped.
pub(crate) fn parse(out: &str) -> Vec<(usize, f64)> {
    let mut rows = Vec::new();
    for line in out.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let nums: Vec<&str> = t.split_whitespace().collect();
        match nums.as_slice() {
            [v] => {
                if let Ok(v) = v.parse::<f64>() {
                    rows.push((0, v));
                }
            }
            [s, v, ..] => {
                if let (Ok(s), Ok(v)) = (s.parse::<usize>(), v.parse::<f64>()) {
                    rows.push((s, v));
                }
            }
            [] => {}
        }
    }
    rows
}

/// The median of `xs` (`None` if empty).
pub(crate) fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osu_output_parses() {
        let lat = "# OSU MPI Latency Test v7.4\n# Datatype: MPI_CHAR.\n# Size       Avg Latency(us)\n\
                   1                       0.39\n8                       0.38\n1048576     112.50\n";
        assert_eq!(parse(lat), vec![(1, 0.39), (8, 0.38), (1048576, 112.5)]);
        let bar = "# OSU MPI Barrier Latency Test v7.4\n# Avg Latency(us)\n             0.37\n";
        assert_eq!(parse(bar), vec![(0, 0.37)]);
        let val = "# Size       Avg Latency(us)        Validation\n8      1.86    Pass\n";
        assert_eq!(parse(val), vec![(8, 1.86)]);
        assert!(parse("rfx run: rank 0 failed\n").is_empty());
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(find("osu_bw").map(|f| f.1), Some(Unit::MBps));
    }
}
