//! Per-lease secrets.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The random 32-byte secret of one lease: the daemon gives it to the
/// tenant (in [`LeaseInfo`](super::LeaseInfo)) and to the executor manager
/// (in [`Command::Start`](super::Command::Start)); the executor accepts only
/// connections that present it. Encoded as 64 lower-case hex digits; `Debug`
/// never shows it.
///
/// ```
/// use rfx_leases::wire::LeaseToken;
/// let t = LeaseToken::random()?;
/// let hex = t.to_hex();
/// assert_eq!(LeaseToken::from_hex(&hex), Some(t.clone()));
/// assert!(t.verify(&hex));
/// assert!(!format!("{t:?}").contains(&hex));
/// # Ok::<(), getrandom::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct LeaseToken([u8; 32]);

impl LeaseToken {
    /// A fresh secret from the OS random source.
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
