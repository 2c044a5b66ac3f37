//! Reading the launcher's environment, pure (variables come from a
//! function so tests pass their own).

use std::net::IpAddr;

use crate::error::CollError;

/// What a process learns from its launcher's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    /// This process's rank.
    pub rank: usize,
    /// The job size.
    pub size: usize,
    /// Where the variables came from (`RFX`, `SLURM`, `OMPI`, `PMI`).
    pub launcher: &'static str,
    /// `RFX_RENDEZVOUS`, `host:port`.
    pub rendezvous: String,
    /// `RFX_JOB_KEY`, decoded from hex (empty when unset).
    pub key: Vec<u8>,
    /// `RFX_BIND_ADDR`.
    pub bind: Option<IpAddr>,
    /// `RFX_RENDEZVOUS_EXTERNAL=1`: a launcher hosts the rendezvous.
    pub external: bool,
}

const PAIRS: [(&str, &str, &str); 4] = [
    ("RFX", "RFX_RANK", "RFX_SIZE"),
    ("SLURM", "SLURM_PROCID", "SLURM_NTASKS"),
    ("OMPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMI", "PMI_RANK", "PMI_SIZE"),
];

impl LaunchEnv {
    /// Reads the variables through `get`: rank and size from the first
    /// pair present of `RFX_RANK/RFX_SIZE`, `SLURM_PROCID/SLURM_NTASKS`,
    /// `OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE`, `PMI_RANK/PMI_SIZE`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<LaunchEnv, CollError> {
        let (launcher, rank_var, size_var, rank, size) = PAIRS
            .iter()
            .find_map(|&(l, r, s)| get(r).map(|rv| (l, r, s, rv, get(s))))
            .ok_or_else(|| {
                CollError::Env(
                    "no rank: set RFX_RANK and RFX_SIZE (or run under srun: SLURM_PROCID/\
                     SLURM_NTASKS, mpirun: OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE, \
                     or PMI_RANK/PMI_SIZE)"
                        .into(),
                )
            })?;
        let parse = |var: &str, v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|e| CollError::Env(format!("{var}={v:?}: {e}")))
        };
        let rank = parse(rank_var, &rank)?;
        let size =
            size.ok_or_else(|| CollError::Env(format!("{rank_var} is set but {size_var} is not")))?;
        let size = parse(size_var, &size)?;
        if size == 0 || rank >= size {
            return Err(CollError::Env(format!(
                "{rank_var}={rank} is not below {size_var}={size}"
            )));
        }
        let rendezvous = get("RFX_RENDEZVOUS")
            .map(|s| s.trim().to_string())
            .ok_or_else(|| {
                CollError::Env("RFX_RENDEZVOUS is not set: give the rendezvous as host:port".into())
            })?;
        let key = match get("RFX_JOB_KEY") {
            None => Vec::new(),
            Some(h) => decode_hex(h.trim())
                .ok_or_else(|| CollError::Env(format!("RFX_JOB_KEY={h:?}: not hex")))?,
        };
        let bind = match get("RFX_BIND_ADDR") {
            None => None,
            Some(b) => Some(
                b.trim()
                    .parse()
                    .map_err(|e| CollError::Env(format!("RFX_BIND_ADDR={b:?}: {e}")))?,
            ),
        };
        let external = get("RFX_RENDEZVOUS_EXTERNAL").is_some_and(|v| v.trim() == "1");
        Ok(LaunchEnv {
            rank,
            size,
            launcher,
            rendezvous,
            key,
            bind,
            external,
        })
    }
}

/// Decodes hex (even length, either case).
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Encodes bytes as lower-case hex.
pub fn encode_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn precedence_and_errors() {
        let e = LaunchEnv::from_vars(env(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_NTASKS", "4"),
            ("PMI_RANK", "1"),
            ("PMI_SIZE", "2"),
            ("RFX_RENDEZVOUS", "127.0.0.1:9"),
            ("RFX_JOB_KEY", "00ffA0"),
        ]))
        .unwrap();
        assert_eq!((e.rank, e.size, e.launcher), (3, 4, "SLURM"));
        assert_eq!(e.key, vec![0, 0xff, 0xa0]);
        let e = LaunchEnv::from_vars(env(&[
            ("OMPI_COMM_WORLD_RANK", "0"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("RFX_RENDEZVOUS", "h:1"),
            ("RFX_RENDEZVOUS_EXTERNAL", "1"),
        ]))
        .unwrap();
        assert_eq!((e.launcher, e.external), ("OMPI", true));
        let err = |p: &[(&str, &str)]| match LaunchEnv::from_vars(env(p)) {
            Err(CollError::Env(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(&[]).contains("RFX_RANK"));
        assert!(err(&[("RFX_RANK", "0")]).contains("RFX_SIZE"));
        assert!(err(&[("RFX_RANK", "2"), ("RFX_SIZE", "2")]).contains("below"));
        assert!(err(&[("RFX_RANK", "x"), ("RFX_SIZE", "2")]).contains("RFX_RANK"));
        assert!(err(&[("RFX_RANK", "0"), ("RFX_SIZE", "2")]).contains("RFX_RENDEZVOUS"));
        assert!(err(&[
            ("RFX_RANK", "0"),
            ("RFX_SIZE", "2"),
            ("RFX_RENDEZVOUS", "h:1"),
            ("RFX_JOB_KEY", "xyz")
        ])
        .contains("RFX_JOB_KEY"));
    }

    #[test]
    fn hex() {
        assert_eq!(decode_hex("0a0B"), Some(vec![10, 11]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(encode_hex(&[1, 0xfe]), "01fe");
        assert_eq!(decode_hex(""), Some(vec![]));
    }
}
