//! Claim grants: a scheduler's decision that one worker may claim one execution until a time.
//!
//! `claim_for_worker` (or `issue_claim_grant` for a chosen execution) reserves an eligible
//! execution for a worker instance: no other claim takes it while the grant is live. The worker
//! claims it with `claim_execution`, presenting the grant key; the grant is consumed, so a key
//! works once. A grant nobody uses expires and the execution is claimable by anyone again.
//!
//! A grant key is `<kid>.<grant id>.<expiry ms>.<64 hex digits>`: HMAC-SHA256 under the
//! waitpoint keystore's key `kid` over the grant id, the execution, the worker instance and the
//! expiry. A key that does not verify is refused before the database is asked anything.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::capability::CapabilitySet;
use crate::error::{ContentionKind, EngineError};
use crate::handle::Handle;
use crate::id::{
    AttemptId, AttemptIndex, ExecutionId, GrantId, LaneId, LeaseEpoch, LeaseId, TimestampMs, WorkerId, WorkerInstanceId,
};
use crate::lease::MAX_GRANT_TTL_MS;
use crate::suspension::token::HmacKey;

/// Arguments of `claim_for_worker`: find the best eligible execution on a lane that the worker
/// can run and reserve it for the worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimForWorkerArgs {
    /// Lane.
    pub lane_id: LaneId,
    /// Worker pool.
    pub worker_id: WorkerId,
    /// Worker process the grant is for.
    pub worker_instance_id: WorkerInstanceId,
    /// The worker's capabilities.
    #[serde(default)]
    pub worker_capabilities: CapabilitySet,
    /// How long the grant stays valid (1 ms ..= 60 s).
    pub grant_ttl_ms: u64,
}

impl ClaimForWorkerArgs {
    /// Checks the TTL, the ids and the capability tokens.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_grant_ttl(self.grant_ttl_ms)?;
        self.worker_id.validate()?;
        self.worker_instance_id.validate()?;
        crate::capability::validate_tokens(&self.worker_capabilities.0)
    }
}

pub(crate) fn validate_grant_ttl(ttl: u64) -> Result<(), EngineError> {
    if ttl == 0 || ttl > MAX_GRANT_TTL_MS {
        return Err(EngineError::invalid(format!("grant_ttl_ms {ttl} outside 1..={MAX_GRANT_TTL_MS}")));
    }
    Ok(())
}

/// A reservation of one execution for one worker instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClaimGrant {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its lane.
    pub lane_id: LaneId,
    /// The signed key to present to `claim_execution`.
    pub grant_key: String,
    /// When the grant lapses.
    pub expires_at_ms: TimestampMs,
}

/// Outcome of `claim_for_worker`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ClaimForWorkerOutcome {
    /// Nothing on the lane is eligible for this worker now.
    NoWork,
    /// Reserved for the worker.
    Granted(ClaimGrant),
}

/// Arguments of `issue_claim_grant`: reserve a chosen execution for a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueClaimGrantArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its lane.
    pub lane_id: LaneId,
    /// Worker pool.
    pub worker_id: WorkerId,
    /// Worker process the grant is for.
    pub worker_instance_id: WorkerInstanceId,
    /// The worker's capabilities (must cover the execution's requirements).
    #[serde(default)]
    pub worker_capabilities: CapabilitySet,
    /// How long the grant stays valid (1 ms ..= 60 s).
    pub grant_ttl_ms: u64,
}

impl IssueClaimGrantArgs {
    /// Checks the TTL, the ids and the capability tokens.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_grant_ttl(self.grant_ttl_ms)?;
        self.worker_id.validate()?;
        self.worker_instance_id.validate()?;
        crate::capability::validate_tokens(&self.worker_capabilities.0)
    }
}

/// Outcome of `issue_claim_grant`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum IssueClaimGrantOutcome {
    /// Reserved for the worker.
    Granted(ClaimGrant),
}

/// Arguments of `claim_execution`: claim with a grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimExecutionArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Worker pool.
    pub worker_id: WorkerId,
    /// Worker process (must be the grant's).
    pub worker_instance_id: WorkerInstanceId,
    /// Lane (must be the execution's).
    pub lane_id: LaneId,
    /// The grant key from [`ClaimGrant`].
    pub grant_key: String,
    /// TTL of the lease.
    pub lease_ttl_ms: u64,
}

impl ClaimExecutionArgs {
    /// Checks the TTL, the ids and that a grant key is present.
    pub fn validate(&self) -> Result<(), EngineError> {
        crate::policy::validate_lease_ttl_ms(self.lease_ttl_ms)?;
        self.worker_id.validate()?;
        self.worker_instance_id.validate()?;
        crate::execution::validate_name("grant_key", &self.grant_key, false)
    }
}

/// A lease taken by `claim_execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClaimedExecution {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The lease.
    pub lease_id: LeaseId,
    /// Its epoch.
    pub lease_epoch: LeaseEpoch,
    /// The attempt.
    pub attempt_index: AttemptIndex,
    /// The attempt's id.
    pub attempt_id: AttemptId,
    /// When the lease expires unless renewed.
    pub lease_expires_at: TimestampMs,
    /// The handle for the lease holder's calls.
    pub handle: Handle,
}

/// Outcome of `claim_execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ClaimExecutionResult {
    /// Claimed.
    Claimed(ClaimedExecution),
}

/// Arguments of `issue_grant_and_claim`: an operator claims an execution now, as the worker
/// `operator`, in one transaction (no grant is left behind).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueGrantAndClaimArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its lane.
    pub lane_id: LaneId,
    /// TTL of the lease.
    pub lease_duration_ms: u64,
}

impl IssueGrantAndClaimArgs {
    /// Checks the TTL.
    pub fn validate(&self) -> Result<(), EngineError> {
        crate::policy::validate_lease_ttl_ms(self.lease_duration_ms).map(|_| ())
    }
}

/// Outcome of `issue_grant_and_claim`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClaimGrantOutcome {
    /// The lease.
    pub lease_id: LeaseId,
    /// Its epoch.
    pub lease_epoch: LeaseEpoch,
    /// The attempt.
    pub attempt_index: AttemptIndex,
    /// The handle, so the operator can end what it claimed.
    pub handle: Handle,
}

/// What a grant key is signed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantBinding<'a> {
    /// The grant.
    pub grant_id: GrantId,
    /// The execution reserved.
    pub execution_id: ExecutionId,
    /// The worker instance it is reserved for.
    pub worker_instance_id: &'a WorkerInstanceId,
    /// Its expiry.
    pub expires_at: TimestampMs,
}

/// The parts of a grant key, before verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedGrantKey {
    /// Signing key id.
    pub kid: String,
    /// The grant.
    pub grant_id: GrantId,
    /// The expiry it claims.
    pub expires_at: TimestampMs,
    digest: [u8; 32],
}

fn invalid_grant() -> EngineError {
    EngineError::Contention(ContentionKind::InvalidClaimGrant)
}

impl ParsedGrantKey {
    /// Splits a key; a malformed one is `invalid_claim_grant`.
    pub fn parse(key: &str) -> Result<Self, EngineError> {
        let mut parts = key.split('.');
        let (Some(kid), Some(grant), Some(expires), Some(digest), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid_grant());
        };
        crate::suspension::token::validate_kid(kid).map_err(|_| invalid_grant())?;
        let grant_id = GrantId::parse(grant).map_err(|_| invalid_grant())?;
        let expires_at = expires.parse::<i64>().map(TimestampMs).map_err(|_| invalid_grant())?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(digest, &mut bytes).map_err(|_| invalid_grant())?;
        Ok(Self { kid: kid.to_owned(), grant_id, expires_at, digest: bytes })
    }
}

fn digest(secret: &[u8], b: &GrantBinding<'_>) -> [u8; 32] {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(b"ff-claim-grant\0");
    mac.update(b.grant_id.0.as_bytes());
    mac.update(b.execution_id.to_string().as_bytes());
    mac.update(b"\0");
    mac.update(b.worker_instance_id.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(&b.expires_at.0.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// Signs a grant with `key`.
pub fn mint_grant_key(key: &HmacKey, b: &GrantBinding<'_>) -> String {
    format!("{}.{}.{}.{}", key.kid, b.grant_id, b.expires_at.0, hex::encode(digest(&key.secret, b)))
}

/// Verifies a presented key for `binding` against the keystore: `invalid_claim_grant` when it
/// is malformed, signed by an unknown or retired key, or not for this execution and worker.
/// Expiry is the caller's to check against database time.
pub fn verify_grant_key(
    parsed: &ParsedGrantKey,
    keys: &[HmacKey],
    b: &GrantBinding<'_>,
    now: TimestampMs,
) -> Result<(), EngineError> {
    let key = keys.iter().find(|k| k.kid == parsed.kid).ok_or_else(invalid_grant)?;
    if key.expires_at.is_some_and(|at| at <= now) {
        return Err(invalid_grant());
    }
    if b.grant_id != parsed.grant_id || b.expires_at != parsed.expires_at {
        return Err(invalid_grant());
    }
    if bool::from(digest(&key.secret, b).ct_eq(&parsed.digest)) { Ok(()) } else { Err(invalid_grant()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suspension::token::SECRET_BYTES;

    fn key(kid: &str, byte: u8) -> HmacKey {
        HmacKey { kid: kid.into(), secret: vec![byte; SECRET_BYTES], expires_at: None }
    }

    #[test]
    fn a_grant_key_verifies_only_for_its_binding() {
        let worker = WorkerInstanceId("w-1".into());
        let other = WorkerInstanceId("w-2".into());
        let b = GrantBinding {
            grant_id: GrantId::new(),
            execution_id: ExecutionId::in_partition(3),
            worker_instance_id: &worker,
            expires_at: TimestampMs(1_000),
        };
        let k = key("k1", 7);
        let minted = mint_grant_key(&k, &b);
        let parsed = ParsedGrantKey::parse(&minted).unwrap();
        verify_grant_key(&parsed, std::slice::from_ref(&k), &b, TimestampMs(0)).unwrap();
        let for_other = GrantBinding { worker_instance_id: &other, ..b };
        assert!(verify_grant_key(&parsed, std::slice::from_ref(&k), &for_other, TimestampMs(0)).is_err());
        let other_exec = GrantBinding { execution_id: ExecutionId::in_partition(3), ..b };
        assert!(verify_grant_key(&parsed, std::slice::from_ref(&k), &other_exec, TimestampMs(0)).is_err());
        assert!(verify_grant_key(&parsed, &[key("k1", 8)], &b, TimestampMs(0)).is_err());
        assert!(verify_grant_key(&parsed, &[key("k2", 7)], &b, TimestampMs(0)).is_err());
        let mut tampered = minted.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        let parsed_tampered = ParsedGrantKey::parse(&tampered).unwrap();
        assert!(verify_grant_key(&parsed_tampered, std::slice::from_ref(&k), &b, TimestampMs(0)).is_err());
        for bad in ["", "k1", "k1.x.1.00", "k 1.00000000-0000-0000-0000-000000000000.1.00", &format!("{minted}.x")] {
            assert_eq!(ParsedGrantKey::parse(bad).unwrap_err().code(), "invalid_claim_grant", "{bad}");
        }
    }
}
