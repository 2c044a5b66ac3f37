//! Credentials: tenant tokens (stored only as salted SHA-256 hashes) and
//! the cluster key.
//!
//! A tenant token is `NAME.SECRET`, SECRET being 64 hex digits of a random
//! 32-byte value: the name finds the record, the record's salt and hash
//! check the secret. 256 random bits need no slow hash.

use crate::error::DaemonError;
use crate::proto::Millis;
use crate::wire::token::{ct_eq, digest, hex, parse_hex, CLUSTER_KEY_SALT};
use crate::wire::TenantInfo;
use serde::{Deserialize, Serialize};

/// Longest tenant name.
const MAX_NAME_LEN: usize = 64;

/// What the store keeps of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TenantRecord {
    /// Random per-tenant salt, hex.
    salt: String,
    /// SHA-256 of salt bytes then secret bytes, hex.
    hash: String,
    /// When the tenant was added.
    pub(crate) created_at_ms: Millis,
}

impl TenantRecord {
    /// Whether `secret` is this tenant's.
    fn verify(&self, secret: &[u8; 32]) -> bool {
        let (Some(salt), Some(hash)) = (parse_hex::<16>(&self.salt), parse_hex::<32>(&self.hash))
        else {
            return false;
        };
        ct_eq(&digest(&salt, secret), &hash)
    }

    /// The record as listed to operators.
    pub(crate) fn info(&self, name: &str) -> TenantInfo {
        TenantInfo {
            name: name.to_owned(),
            created_at_ms: self.created_at_ms,
        }
    }
}

/// A new tenant: its record and its token (to show once).
pub(crate) fn new_tenant(name: &str, now: Millis) -> Result<(TenantRecord, String), DaemonError> {
    validate_name(name)?;
    let mut salt = [0u8; 16];
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut salt).map_err(DaemonError::Random)?;
    getrandom::getrandom(&mut secret).map_err(DaemonError::Random)?;
    let record = TenantRecord {
        salt: hex(&salt),
        hash: hex(&digest(&salt, &secret)),
        created_at_ms: now,
    };
    Ok((record, format!("{name}.{}", hex(&secret))))
}

/// Checks a tenant name: 1 to 64 of `[A-Za-z0-9_-]`.
pub(crate) fn validate_name(name: &str) -> Result<(), DaemonError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(DaemonError::InvalidTenantName(name.to_owned()))
    }
}

/// The tenant a token belongs to, if `lookup` finds its record and the
/// secret matches.
pub(crate) fn check_token<'t, 'r>(
    token: &'t str,
    lookup: impl FnOnce(&str) -> Option<&'r TenantRecord>,
) -> Option<&'t str> {
    let (name, secret) = token.split_once('.')?;
    let secret = parse_hex::<32>(secret)?;
    lookup(name).filter(|r| r.verify(&secret)).map(|_| name)
}

/// The cluster key, kept as its digest so comparisons take constant time
/// whatever the presented key's length.
#[derive(Clone)]
pub(crate) struct ClusterKey([u8; 32]);

impl ClusterKey {
    /// Refuses an empty key: hosts and operators would need no secret.
    pub(crate) fn new(key: &str) -> Result<Self, DaemonError> {
        if key.is_empty() {
            return Err(DaemonError::Config("the cluster key is empty".into()));
        }
        Ok(Self(digest(CLUSTER_KEY_SALT, key.as_bytes())))
    }

    /// Whether `presented` is the key.
    pub(crate) fn verify(&self, presented: &str) -> bool {
        ct_eq(&digest(CLUSTER_KEY_SALT, presented.as_bytes()), &self.0)
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn tokens_verify_only_for_their_tenant() {
        let (alice, a_tok) = new_tenant("alice", 1).expect("tenant");
        let (bob, b_tok) = new_tenant("bob", 2).expect("tenant");
        let db = BTreeMap::from([("alice".to_owned(), alice), ("bob".to_owned(), bob)]);
        let find = |t: &str| check_token(t, |n| db.get(n)).map(str::to_owned);
        assert_eq!(find(&a_tok).as_deref(), Some("alice"));
        assert_eq!(find(&b_tok).as_deref(), Some("bob"));
        let forged = format!("alice.{}", b_tok.split_once('.').expect("dot").1);
        assert_eq!(find(&forged), None);
        assert_eq!(find("alice"), None);
        assert_eq!(find("carol.00"), None);
        assert!(!serde_json::to_string(&db)
            .expect("json")
            .contains(&a_tok[6..]));
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "a.b", "a b", "é", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("team-7_x").is_ok());
    }

    #[test]
    fn cluster_key() {
        assert!(ClusterKey::new("").is_err());
        let k = ClusterKey::new("s3cret").expect("key");
        assert!(k.verify("s3cret"));
        assert!(!k.verify("s3cre"));
        assert!(!k.verify(""));
    }
}
