//! Per-lease secrets: derived, never stored.
//!
//! A lease's token is `HMAC-SHA256(K, identity)`, where `K` ([`LeaseKey`])
//! is derived from the cluster key with a label and `identity` is a
//! canonical encoding of the lease's id, host, grant time and tenant. The
//! lease manager computes it when a tenant asks; the executor manager, which
//! holds the cluster key too, derives the same token from the lease of a
//! [`Command::Start`](super::Command::Start). Nothing secret about a lease
//! is stored or sent between them.
//!
//! Lookups prove the token without sending it: the proof for lease `N` is
//! `HMAC-SHA256(token, "rfx-lookup-v1" || N as 8 big-endian bytes)`
//! ([`LeaseToken::lookup_proof`]).

use crate::proto::{HostId, Lease, LeaseId, Millis, TenantId};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// The label `K` is derived with.
const LEASE_TOKEN_LABEL: &[u8] = b"rfx-lease-token-v1";

/// The label of lookup proofs.
const LOOKUP_LABEL: &[u8] = b"rfx-lookup-v1";

/// The salt of the cluster key's digest (the lease manager also checks
/// presented keys against this digest).
pub(crate) const CLUSTER_KEY_SALT: &[u8] = b"rfx-cluster-key";

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// SHA-256 of `salt` then `secret`.
pub(crate) fn digest(salt: &[u8], secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret);
    h.finalize().into()
}

/// The key lease tokens are derived with: `HMAC-SHA256(SHA-256("rfx-cluster-key"
/// || cluster key), "rfx-lease-token-v1")`. The lease manager and every
/// executor manager compute it from the cluster key they share. `Debug`
/// never shows it.
///
/// ```
/// use rfx_leases::proto::{HostId, LeaseId, TenantId};
/// use rfx_leases::wire::LeaseKey;
/// let k = LeaseKey::from_cluster_key("cluster-secret");
/// let alice = TenantId::from("alice");
/// let t = k.token_for(LeaseId(7), &alice, HostId(1), 1_700_000_000_000);
/// // Deterministic: the executor manager derives the same token.
/// assert_eq!(t, LeaseKey::from_cluster_key("cluster-secret").token_for(LeaseId(7), &alice, HostId(1), 1_700_000_000_000));
/// assert_ne!(t, k.token_for(LeaseId(8), &alice, HostId(1), 1_700_000_000_000));
/// ```
#[derive(Clone)]
pub struct LeaseKey([u8; 32]);

impl LeaseKey {
    /// The key derived from the cluster key (`RFX_CLUSTER_KEY`).
    pub fn from_cluster_key(cluster_key: &str) -> Self {
        let d = digest(CLUSTER_KEY_SALT, cluster_key.as_bytes());
        Self(hmac(&d, &[LEASE_TOKEN_LABEL]))
    }

    /// The token of `lease`, from the fields fixed at its grant (id, tenant,
    /// host, grant time): renewals and usage do not change it.
    pub fn token(&self, lease: &Lease) -> LeaseToken {
        self.token_for(lease.id, &lease.tenant, lease.host, lease.granted_at_ms)
    }

    /// The token of the lease with this identity. Lease ids are never
    /// reused by a lease manager (its log survives restarts); the grant time
    /// and tenant keep tokens apart even across a store started afresh.
    pub fn token_for(
        &self,
        id: LeaseId,
        tenant: &TenantId,
        host: HostId,
        granted_at_ms: Millis,
    ) -> LeaseToken {
        let name = tenant.as_str().as_bytes();
        let len = u64::try_from(name.len()).unwrap_or(u64::MAX);
        LeaseToken(hmac(
            &self.0,
            &[
                &id.0.to_be_bytes(),
                &host.0.to_be_bytes(),
                &granted_at_ms.to_be_bytes(),
                &len.to_be_bytes(),
                name,
            ],
        ))
    }
}

impl fmt::Debug for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseKey(<secret>)")
    }
}

/// The 32-byte secret of one lease, derived by [`LeaseKey`]: the lease
/// manager gives it to the tenant (in [`LeaseInfo`](super::LeaseInfo)); the
/// executor manager derives it and hands it to the lease's executor, which
/// accepts only connections that prove it. Encoded as 64 lower-case hex
/// digits; `Debug` never shows it.
///
/// ```
/// use rfx_leases::proto::LeaseId;
/// use rfx_leases::wire::LeaseToken;
/// let t = LeaseToken::random()?;
/// let hex = t.to_hex();
/// assert_eq!(LeaseToken::from_hex(&hex), Some(t.clone()));
/// assert!(t.verify(&hex));
/// assert!(!format!("{t:?}").contains(&hex));
/// // A lookup proves the token without sending it.
/// let proof = t.lookup_proof_hex(LeaseId(7));
/// assert!(t.verify_lookup_proof(LeaseId(7), &proof));
/// assert!(!t.verify_lookup_proof(LeaseId(8), &proof));
/// assert!(!t.verify_lookup_proof(LeaseId(7), &hex));
/// # Ok::<(), getrandom::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct LeaseToken([u8; 32]);

impl LeaseToken {
    /// A random secret from the OS random source (tests, one-off keys;
    /// lease tokens come from [`LeaseKey`]).
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut b = [0; 32];
        getrandom::getrandom(&mut b)?;
        Ok(Self(b))
    }

    /// The secret from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The secret as 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 hex digits (either case); `None` for anything else.
    pub fn from_hex(s: &str) -> Option<Self> {
        parse_hex(s).map(Self)
    }

    /// Whether `presented` (hex) is this secret, in constant time for
    /// well-formed input.
    pub fn verify(&self, presented: &str) -> bool {
        parse_hex::<32>(presented).is_some_and(|b| ct_eq(&b, &self.0))
    }

    /// The proof of this token for a lookup of `lease`:
    /// `HMAC-SHA256(token, "rfx-lookup-v1" || lease as 8 big-endian bytes)`.
    pub fn lookup_proof(&self, lease: LeaseId) -> [u8; 32] {
        lookup_proof(&self.0, lease)
    }

    /// [`lookup_proof`](Self::lookup_proof) as 64 lower-case hex digits.
    pub fn lookup_proof_hex(&self, lease: LeaseId) -> String {
        hex(&self.lookup_proof(lease))
    }

    /// Whether `presented` (hex) is the lookup proof of this token for
    /// `lease`, in constant time for well-formed input.
    pub fn verify_lookup_proof(&self, lease: LeaseId, presented: &str) -> bool {
        parse_hex::<32>(presented).is_some_and(|b| ct_eq(&b, &self.lookup_proof(lease)))
    }
}

impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseToken(<secret>)")
    }
}

impl Serialize for LeaseToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for LeaseToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Parses exactly `2 * N` hex digits.
pub(crate) fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = char::from(*pair.first()?).to_digit(16)?;
        let lo = char::from(*pair.get(1)?).to_digit(16)?;
        *o = u8::try_from(hi << 4 | lo).ok()?;
    }
    Some(out)
}

/// Constant-time equality of two equal-length byte strings.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The lookup proof for `lease` of a token given as raw bytes (a well-formed
/// token's 32 bytes; anything else yields a proof no lease accepts).
pub fn lookup_proof(token: &[u8], lease: LeaseId) -> [u8; 32] {
    hmac(token, &[LOOKUP_LABEL, &lease.0.to_be_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_700_000_000_000;

    fn alice() -> TenantId {
        TenantId::from("alice")
    }

    #[test]
    fn derivation_is_deterministic() {
        let a = LeaseKey::from_cluster_key("k1");
        let b = LeaseKey::from_cluster_key("k1");
        assert_eq!(
            a.token_for(LeaseId(1), &alice(), HostId(2), T0),
            b.token_for(LeaseId(1), &alice(), HostId(2), T0)
        );
        // Known answer: the derivation is part of the protocol between the
        // lease manager and executor managers of possibly different builds.
        assert_eq!(
            a.token_for(LeaseId(1), &alice(), HostId(2), T0).to_hex(),
            KNOWN_ANSWER
        );
    }

    /// `LeaseKey::from_cluster_key("k1").token_for(1, "alice", 2, T0)`,
    /// computed once; a change here breaks mixed-version clusters.
    const KNOWN_ANSWER: &str = "c162daf816955980ce0ce032aa35e4bc671c57f1d326a4ec24ccb90c0cc109bd";

    #[test]
    fn every_field_and_the_key_matter() {
        let k = LeaseKey::from_cluster_key("k1");
        let base = k.token_for(LeaseId(1), &alice(), HostId(2), T0);
        let variants = [
            k.token_for(LeaseId(2), &alice(), HostId(2), T0),
            k.token_for(LeaseId(1), &TenantId::from("bob"), HostId(2), T0),
            k.token_for(LeaseId(1), &TenantId::from("alic"), HostId(2), T0),
            k.token_for(LeaseId(1), &alice(), HostId(3), T0),
            k.token_for(LeaseId(1), &alice(), HostId(2), T0 + 1),
            LeaseKey::from_cluster_key("k2").token_for(LeaseId(1), &alice(), HostId(2), T0),
            LeaseKey::from_cluster_key("").token_for(LeaseId(1), &alice(), HostId(2), T0),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(&base, v, "variant {i}");
        }
        // Swapping fields does not collide either (fixed-width encoding).
        assert_ne!(
            k.token_for(LeaseId(2), &alice(), HostId(1), T0),
            k.token_for(LeaseId(1), &alice(), HostId(2), T0)
        );
    }

    #[test]
    fn token_ignores_what_changes_after_the_grant() {
        let k = LeaseKey::from_cluster_key("k1");
        let mut l = Lease {
            id: LeaseId(9),
            tenant: alice(),
            host: HostId(4),
            cores: 1,
            core_ids: vec![0],
            memory_mib: 0,
            accelerators: Default::default(),
            hot_timeout_ms: -1,
            exec_timeout_ms: 0,
            container: None,
            granted_at_ms: T0,
            expires_at_ms: T0 + 10,
            ended_at_ms: None,
            state: crate::proto::LeaseState::Active,
            usage: Default::default(),
        };
        let t = k.token(&l);
        assert_eq!(t, k.token_for(LeaseId(9), &alice(), HostId(4), T0));
        l.expires_at_ms += 1000;
        l.usage.invocations = 5;
        l.ended_at_ms = Some(T0 + 5);
        assert_eq!(k.token(&l), t);
    }

    #[test]
    fn lookup_proofs() {
        let k = LeaseKey::from_cluster_key("k1");
        let a = k.token_for(LeaseId(1), &alice(), HostId(2), T0);
        let b = k.token_for(LeaseId(2), &alice(), HostId(2), T0);
        let pa = a.lookup_proof_hex(LeaseId(1));
        assert_eq!(pa.len(), 64);
        assert!(a.verify_lookup_proof(LeaseId(1), &pa));
        assert!(a.verify_lookup_proof(LeaseId(1), &pa.to_uppercase()));
        // The proof is bound to the lease id and to the token.
        assert!(!a.verify_lookup_proof(LeaseId(2), &pa));
        assert!(!b.verify_lookup_proof(LeaseId(2), &pa));
        // A's token proving itself for B's id: refused by B.
        assert!(!b.verify_lookup_proof(LeaseId(2), &a.lookup_proof_hex(LeaseId(2))));
        // The raw token (the old format) is no proof; nor is garbage.
        assert!(!a.verify_lookup_proof(LeaseId(1), &a.to_hex()));
        for bad in ["", "zz", &"0".repeat(64), &pa[..63], &format!("{pa}0")] {
            assert!(!a.verify_lookup_proof(LeaseId(1), bad), "{bad:?}");
        }
        // The proof does not reveal the token.
        assert_ne!(pa, a.to_hex());
        assert_eq!(
            lookup_proof(a.as_bytes(), LeaseId(1)),
            a.lookup_proof(LeaseId(1))
        );
        // Known answer (computed independently), as for the token.
        assert_eq!(
            pa,
            "4f8162fd738bc285e0099a7a09129e486c35a0a7c58dad9b28be15ed7977c079"
        );
    }

    #[test]
    fn keys_hide_in_debug() {
        let k = LeaseKey::from_cluster_key("k1");
        assert_eq!(format!("{k:?}"), "LeaseKey(<secret>)");
    }
}
