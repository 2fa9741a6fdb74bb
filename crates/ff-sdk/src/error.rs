//! The SDK's error: an engine error (direct transport), an API error (HTTP transport, with the
//! server's stable code), or a transport failure.

use ff_core::EngineError;

/// An SDK call failed.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The server answered with its error body.
    #[error("{code}: {message} (HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable code (`not_found`, `stale_lease`...).
        code: String,
        /// Message.
        message: String,
        /// The server's retry hint.
        retryable: bool,
    },
    /// The backend refused (direct transport).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The request did not get an answer.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The answer could not be understood.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The SDK was configured wrongly.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Codes meaning "this lease is no longer yours": renewing or ending it again cannot succeed.
const LEASE_LOST: &[&str] = &[
    "stale_lease",
    "lease_expired",
    "lease_revoked",
    "execution_not_active",
    "terminal",
    "not_found",
    "no_active_lease",
];

impl SdkError {
    /// The stable code, when the failure has one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            Self::Engine(e) => Some(e.code()),
            _ => None,
        }
    }

    /// True when the same call may succeed if retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, retryable, .. } => *retryable || matches!(status, 429 | 502 | 503 | 504),
            Self::Engine(e) => e.is_retryable(),
            Self::Http(e) => e.is_timeout() || e.is_connect() || e.is_request(),
            Self::Decode(_) | Self::Config(_) => false,
        }
    }

    /// True when the lease this call used is gone (superseded, expired, revoked, or the
    /// execution moved on).
    pub fn is_lease_lost(&self) -> bool {
        self.code().is_some_and(|c| LEASE_LOST.contains(&c))
    }
}
