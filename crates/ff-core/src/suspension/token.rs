//! Waitpoint tokens: bearer credentials that let an outsider deliver a signal to one waitpoint
//! of one execution (a callback URL, an approval link).
//!
//! A token is `<kid>:<64 hex digits>`: HMAC-SHA256 under the key `kid` over an unambiguous
//! encoding of the execution id, the waitpoint id, the waitpoint key and the waitpoint's creation
//! time. Nothing that could be replayed as a token is stored: verification recomputes the HMAC
//! from the waitpoint's stored binding and compares in constant time; listings show only a
//! [`fingerprint`] (a hash of the token, which reveals nothing of the MAC).
//!
//! Keys rotate: the current key signs and never expires; a rotated-out key keeps verifying for
//! exactly its grace period (its `expires_at`), then its tokens are `token_expired`. An unknown
//! key id, a malformed token and a wrong digest are `invalid_token`.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{EngineError, ValidationKind};
use crate::id::{ExecutionId, TimestampMs};

/// Longest key id accepted, in bytes.
pub const MAX_KID_BYTES: usize = 64;
/// Length of a key's secret, in bytes (256 bits).
pub const SECRET_BYTES: usize = 32;

/// One signing key of the keystore.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacKey {
    /// Its id, written before the `:` of every token it signs.
    pub kid: String,
    /// The secret, [`SECRET_BYTES`] long.
    pub secret: Vec<u8>,
    /// When its tokens stop verifying (`None` for the current key, which never expires).
    pub expires_at: Option<TimestampMs>,
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacKey")
            .field("kid", &self.kid)
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Checks a key id: 1..=64 bytes of `[A-Za-z0-9_-]` (so never a `:` or a `.`).
pub fn validate_kid(kid: &str) -> Result<(), EngineError> {
    if kid.is_empty()
        || kid.len() > MAX_KID_BYTES
        || !kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(EngineError::invalid(format!(
            "key id {kid:?} must be 1..={MAX_KID_BYTES} bytes of letters, digits, '_' or '-'"
        )));
    }
    Ok(())
}

/// Decodes a secret given as hex: exactly [`SECRET_BYTES`] bytes (64 hex digits).
pub fn parse_secret_hex(hex_secret: &str) -> Result<Vec<u8>, EngineError> {
    let bytes = hex::decode(hex_secret).map_err(|_| EngineError::invalid("the secret is not hex"))?;
    if bytes.len() != SECRET_BYTES {
        return Err(EngineError::invalid(format!(
            "the secret must be {SECRET_BYTES} bytes ({} hex digits), not {}",
            SECRET_BYTES * 2,
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// What a token is bound to: one waitpoint of one execution, as created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBinding<'a> {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The waitpoint's id.
    pub waitpoint_id: uuid::Uuid,
    /// The waitpoint's key.
    pub waitpoint_key: &'a str,
    /// When the waitpoint was created.
    pub created_at: TimestampMs,
}

impl TokenBinding<'_> {
    /// The signed message: a version tag, then each field length-prefixed, so no two bindings
    /// encode alike.
    fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(128);
        m.extend_from_slice(b"ff-waitpoint-v1");
        for field in [
            self.execution_id.to_string().as_bytes(),
            self.waitpoint_id.as_bytes().as_slice(),
            self.waitpoint_key.as_bytes(),
            &self.created_at.0.to_be_bytes(),
        ] {
            m.extend_from_slice(&(field.len() as u32).to_be_bytes());
            m.extend_from_slice(field);
        }
        m
    }
}

/// A waitpoint token. Its `Debug` hides the digest; `Display` writes the token itself.
#[derive(Clone, PartialEq, Eq)]
pub struct WaitpointToken {
    kid: String,
    digest: [u8; 32],
}

impl WaitpointToken {
    /// The id of the key that signed it.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Parses `<kid>:<64 hex digits>`; anything else is `invalid_token`.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        let bad = || EngineError::validation(ValidationKind::InvalidToken, "malformed waitpoint token");
        let (kid, hex_digest) = s.split_once(':').ok_or_else(bad)?;
        validate_kid(kid).map_err(|_| bad())?;
        if hex_digest.len() != 64 {
            return Err(bad());
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| bad())?;
        Ok(Self { kid: kid.to_owned(), digest })
    }
}

impl fmt::Display for WaitpointToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kid, hex::encode(self.digest))
    }
}

impl fmt::Debug for WaitpointToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WaitpointToken({}:<redacted>)", self.kid)
    }
}

fn digest(secret: &[u8], binding: &TokenBinding<'_>) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(&binding.message());
    mac.finalize().into_bytes().into()
}

/// Signs `binding` with `key`.
pub fn mint(key: &HmacKey, binding: &TokenBinding<'_>) -> WaitpointToken {
    WaitpointToken { kid: key.kid.clone(), digest: digest(&key.secret, binding) }
}

/// Verifies a presented token for `binding` against the keystore `keys` at time `now`:
/// `invalid_token` when malformed, signed by an unknown key or not for this binding (another
/// waitpoint, another execution, a tampered digest); `token_expired` when its key's grace period
/// has ended. The digest comparison is constant-time.
pub fn verify(
    presented: &str,
    keys: &[HmacKey],
    binding: &TokenBinding<'_>,
    now: TimestampMs,
) -> Result<(), EngineError> {
    let token = WaitpointToken::parse(presented)?;
    let key = keys.iter().find(|k| k.kid == token.kid).ok_or_else(|| {
        EngineError::validation(ValidationKind::InvalidToken, format!("unknown waitpoint key id {:?}", token.kid))
    })?;
    if key.expires_at.is_some_and(|at| at <= now) {
        return Err(EngineError::validation(
            ValidationKind::TokenExpired,
            format!("waitpoint key {:?} was rotated out and its grace period has ended", key.kid),
        ));
    }
    let expected = digest(&key.secret, binding);
    if bool::from(expected.ct_eq(&token.digest)) {
        Ok(())
    } else {
        Err(EngineError::validation(ValidationKind::InvalidToken, "the waitpoint token does not match this waitpoint"))
    }
}

/// What listings show of a token: the first 16 hex digits of its SHA-256.
pub fn fingerprint(token: &WaitpointToken) -> String {
    hex::encode(&Sha256::digest(token.to_string().as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, byte: u8, expires_at: Option<i64>) -> HmacKey {
        HmacKey { kid: kid.into(), secret: vec![byte; SECRET_BYTES], expires_at: expires_at.map(TimestampMs) }
    }

    fn binding(key: &str) -> TokenBinding<'_> {
        TokenBinding {
            execution_id: ExecutionId::from_parts(3, uuid::Uuid::from_u128(7)),
            waitpoint_id: uuid::Uuid::from_u128(9),
            waitpoint_key: key,
            created_at: TimestampMs(1_000),
        }
    }

    #[test]
    fn a_minted_token_verifies_and_round_trips() {
        let k = key("k1", 1, None);
        let t = mint(&k, &binding("approval"));
        let s = t.to_string();
        assert!(s.starts_with("k1:") && s.len() == 3 + 64);
        assert_eq!(WaitpointToken::parse(&s).unwrap(), t);
        verify(&s, &[k], &binding("approval"), TimestampMs(5_000)).unwrap();
        assert!(!format!("{t:?}").contains(&s[3..]), "Debug hides the digest");
        assert_eq!(fingerprint(&t).len(), 16);
        assert!(!s.contains(&fingerprint(&t)), "the fingerprint is not part of the token");
    }

    #[test]
    fn every_bad_token_has_its_code() {
        let current = key("k2", 2, None);
        let retired = key("k1", 1, Some(10_000));
        let keys = [current.clone(), retired.clone()];
        let b = binding("approval");
        let good = mint(&current, &b).to_string();
        let old = mint(&retired, &b).to_string();
        let mut tampered = good.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        let other_execution =
            TokenBinding { execution_id: ExecutionId::from_parts(3, uuid::Uuid::from_u128(8)), ..b.clone() };
        let other_waitpoint = TokenBinding { waitpoint_id: uuid::Uuid::from_u128(10), ..b.clone() };
        let other_time = TokenBinding { created_at: TimestampMs(1_001), ..b.clone() };
        let unknown = mint(&key("k9", 9, None), &b).to_string();
        let cases: Vec<(&str, &TokenBinding, i64, &str)> = vec![
            (&tampered, &b, 5_000, "invalid_token"),
            (&good, &other_execution, 5_000, "invalid_token"),
            (&good, &other_waitpoint, 5_000, "invalid_token"),
            (&good, &other_time, 5_000, "invalid_token"),
            (&unknown, &b, 5_000, "invalid_token"),
            ("k2", &b, 5_000, "invalid_token"),
            ("k2:zz", &b, 5_000, "invalid_token"),
            ("", &b, 5_000, "invalid_token"),
            (":abc", &b, 5_000, "invalid_token"),
            (&old, &b, 10_000, "token_expired"),
        ];
        for (token, binding, now, code) in cases {
            let err = verify(token, &keys, binding, TimestampMs(now)).expect_err(token);
            assert_eq!(err.code(), code, "{token}");
        }
        // Within its grace period a rotated-out key still verifies; the current one always does.
        verify(&old, &keys, &b, TimestampMs(9_999)).unwrap();
        verify(&good, &keys, &b, TimestampMs(i64::MAX)).unwrap();
        // A binding differing only in where a field boundary falls signs differently.
        let k = key("k", 1, None);
        let split1 = TokenBinding { waitpoint_key: "ab", ..b.clone() };
        let split2 = TokenBinding { waitpoint_key: "a", ..b.clone() };
        assert_ne!(mint(&k, &split1), mint(&k, &split2));
    }

    #[test]
    fn kids_and_secrets_are_checked() {
        for bad in ["", "a:b", "a.b", "with space", &"x".repeat(MAX_KID_BYTES + 1)] {
            assert!(validate_kid(bad).is_err(), "{bad:?}");
        }
        validate_kid("kid-2026_12").unwrap();
        assert_eq!(parse_secret_hex(&"ab".repeat(32)).unwrap().len(), 32);
        assert!(parse_secret_hex(&"ab".repeat(31)).is_err());
        assert!(parse_secret_hex("not hex at all").is_err());
    }
}
