//! The waitpoint keystore's administration: seeding the first signing key and rotating it.

use serde::{Deserialize, Serialize};

/// Arguments of `seed_waitpoint_hmac_secret`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SeedWaitpointHmacSecretArgs {
    /// The key id.
    pub kid: String,
    /// The secret, 64 hex digits.
    pub secret_hex: String,
}

/// Outcome of `seed_waitpoint_hmac_secret`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SeedOutcome {
    /// The key is installed and current.
    Seeded {
        /// The key id.
        kid: String,
    },
    /// A key is installed already; nothing changed.
    AlreadySeeded {
        /// The current key id.
        kid: String,
        /// Whether it is this very key and secret.
        same_secret: bool,
    },
}

/// Arguments of `rotate_waitpoint_hmac_secret_all`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RotateWaitpointHmacSecretAllArgs {
    /// The new key id.
    pub new_kid: String,
    /// Its secret, 64 hex digits.
    pub new_secret_hex: String,
    /// How long tokens of the keys it replaces keep verifying.
    pub grace_ms: u64,
}

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum RotationOutcome {
    /// The new key is current; the previous one verifies until its grace ends.
    Rotated {
        /// The key it replaced.
        previous_kid: Option<String>,
        /// The new key.
        new_kid: String,
        /// Keys whose grace had ended, removed.
        gc_count: u32,
    },
    /// The same key and secret are current already.
    Noop {
        /// The key id.
        kid: String,
    },
}

/// Outcome of `rotate_waitpoint_hmac_secret_all`: one entry (the keystore is global).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RotateWaitpointHmacSecretAllResult {
    /// The rotation's outcome.
    pub entries: Vec<RotationOutcome>,
}
