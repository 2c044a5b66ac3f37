//! Transport selection: a pure function of what both sides offer.
//!
//! Filter by availability on both ends (and same host for shm), then rank as
//! `docs/design.md` says: verbs, shm, ofi, tcp. A forced transport that one side
//! lacks is an error, never a silent fallback.

use crate::caps::{ProviderInfo, TransportKind};

/// One side of a connection as selection sees it.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// Host identity ([`crate::host::host_id`]).
    pub host: &'a str,
    /// Usable providers.
    pub providers: &'a [ProviderInfo],
    /// Forced transport, if any.
    pub forced: Option<TransportKind>,
}

impl Side<'_> {
    fn has(&self, kind: TransportKind) -> bool {
        self.providers.iter().any(|p| p.kind == kind)
    }
}

/// Why no transport fits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// The two sides force different transports.
    #[error("this side forces {ours} but the peer forces {theirs}")]
    Conflict {
        /// Ours.
        ours: TransportKind,
        /// Theirs.
        theirs: TransportKind,
    },
    /// The forced transport cannot connect these two sides.
    #[error("forced transport {kind} cannot be used: {reason}")]
    ForcedUnusable {
        /// The forced transport.
        kind: TransportKind,
        /// Why.
        reason: &'static str,
    },
    /// Nothing in common.
    #[error("the two sides share no transport")]
    NothingInCommon,
}

fn usable(kind: TransportKind, a: &Side<'_>, b: &Side<'_>) -> Result<(), &'static str> {
    if !a.has(kind) {
        return Err("not available on this side");
    }
    if !b.has(kind) {
        return Err("not available on the peer");
    }
    if kind == TransportKind::Shm && a.host != b.host {
        return Err("the peer is on another host");
    }
    if kind == TransportKind::Ofi {
        // ofi: both sides must run the same libfabric provider (carried in
        // `device`), and libfabric's `shm` reaches only this host.
        let device = |s: &Side<'_>| {
            s.providers
                .iter()
                .find(|p| p.kind == kind)
                .and_then(|p| p.device.clone())
        };
        if device(a) != device(b) {
            return Err("the peer uses another libfabric provider");
        }
        if device(a).as_deref() == Some("shm") && a.host != b.host {
            return Err("libfabric shm and the peer is on another host");
        }
    }
    Ok(())
}

/// Picks the transport for a connection between `local` and `peer`.
/// Symmetric: both sides compute the same answer.
///
/// ```
/// use rfx_fabric::{Caps, ProviderInfo, TransportKind};
/// use rfx_fabric::select::{select, Side};
/// let p = |kind| ProviderInfo { kind, caps: Caps::SEND, max_inline: 0, device: None };
/// let both = [p(TransportKind::Tcp), p(TransportKind::Shm)];
/// let a = Side { host: "h1", providers: &both, forced: None };
/// let same = Side { host: "h1", providers: &both, forced: None };
/// let other = Side { host: "h2", providers: &both, forced: None };
/// assert_eq!(select(&a, &same), Ok(TransportKind::Shm));
/// assert_eq!(select(&a, &other), Ok(TransportKind::Tcp));
/// ```
pub fn select(local: &Side<'_>, peer: &Side<'_>) -> Result<TransportKind, SelectError> {
    let forced = match (local.forced, peer.forced) {
        (Some(a), Some(b)) if a != b => {
            return Err(SelectError::Conflict { ours: a, theirs: b });
        }
        (a, b) => a.or(b),
    };
    if let Some(kind) = forced {
        return usable(kind, local, peer)
            .map(|()| kind)
            .map_err(|reason| SelectError::ForcedUnusable { kind, reason });
    }
    TransportKind::ALL
        .into_iter()
        .find(|&k| usable(k, local, peer).is_ok())
        .ok_or(SelectError::NothingInCommon)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::Caps;
    use TransportKind::*;

    fn p(kind: TransportKind) -> ProviderInfo {
        ProviderInfo {
            kind,
            caps: Caps::SEND,
            max_inline: 0,
            device: None,
        }
    }

    fn side<'a>(
        host: &'a str,
        providers: &'a [ProviderInfo],
        forced: Option<TransportKind>,
    ) -> Side<'a> {
        Side {
            host,
            providers,
            forced,
        }
    }

    #[test]
    fn ranking() {
        let all = [p(Tcp), p(Shm), p(Verbs), p(Ofi)];
        let base = [p(Tcp), p(Shm)];
        let ofi = [p(Tcp), p(Shm), p(Ofi)];
        assert_eq!(
            select(&side("a", &all, None), &side("a", &all, None)),
            Ok(Verbs)
        );
        assert_eq!(
            select(&side("a", &all, None), &side("b", &base, None)),
            Ok(Tcp)
        );
        assert_eq!(
            select(&side("a", &all, None), &side("a", &base, None)),
            Ok(Shm)
        );
        assert_eq!(
            select(&side("a", &ofi, None), &side("b", &all, None)),
            Ok(Ofi)
        );
    }

    #[test]
    fn forced() {
        let base = [p(Tcp), p(Shm)];
        let tcp_only = [p(Tcp)];
        assert_eq!(
            select(&side("a", &base, Some(Tcp)), &side("a", &base, None)),
            Ok(Tcp)
        );
        assert_eq!(
            select(&side("a", &base, None), &side("a", &base, Some(Tcp))),
            Ok(Tcp)
        );
        assert_eq!(
            select(&side("a", &base, Some(Shm)), &side("b", &base, None)),
            Err(SelectError::ForcedUnusable {
                kind: Shm,
                reason: "the peer is on another host"
            })
        );
        assert_eq!(
            select(&side("a", &base, Some(Shm)), &side("a", &tcp_only, None)),
            Err(SelectError::ForcedUnusable {
                kind: Shm,
                reason: "not available on the peer"
            })
        );
        assert_eq!(
            select(&side("a", &base, Some(Shm)), &side("a", &base, Some(Tcp))),
            Err(SelectError::Conflict {
                ours: Shm,
                theirs: Tcp
            })
        );
        assert_eq!(
            select(&side("a", &[], None), &side("a", &base, None)),
            Err(SelectError::NothingInCommon)
        );
    }

    #[test]
    fn ofi_needs_the_same_libfabric_provider() {
        let ofi = |dev: &str| ProviderInfo {
            device: Some(dev.to_string()),
            ..p(Ofi)
        };
        let rxm = [p(Tcp), ofi("tcp;ofi_rxm")];
        let shm = [p(Tcp), ofi("shm")];
        assert_eq!(
            select(&side("a", &rxm, None), &side("b", &rxm, None)),
            Ok(Ofi)
        );
        assert_eq!(
            select(&side("a", &rxm, None), &side("b", &shm, None)),
            Ok(Tcp)
        );
        assert_eq!(
            select(&side("a", &shm, None), &side("a", &shm, None)),
            Ok(Ofi)
        );
        assert_eq!(
            select(&side("a", &shm, Some(Ofi)), &side("b", &shm, None)),
            Err(SelectError::ForcedUnusable {
                kind: Ofi,
                reason: "libfabric shm and the peer is on another host"
            })
        );
    }

    #[test]
    fn symmetric() {
        let sets: [&[ProviderInfo]; 3] =
            [&[p(Tcp)], &[p(Tcp), p(Shm)], &[p(Tcp), p(Shm), p(Verbs)]];
        for a in sets {
            for b in sets {
                for (ha, hb) in [("x", "x"), ("x", "y")] {
                    let l = side(ha, a, None);
                    let r = side(hb, b, None);
                    assert_eq!(select(&l, &r), select(&r, &l));
                }
            }
        }
    }
}
