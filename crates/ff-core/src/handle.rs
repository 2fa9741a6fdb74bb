//! Worker handles and lease fences.
//!
//! A [`Handle`] is what a worker holds after a claim: the backend family that minted it, the
//! claim kind, and an opaque payload the backend decodes. Backends reject a handle minted by
//! another family (`Validation(HandleFromOtherBackend)`) and a damaged one
//! (`Validation(InvalidHandle)`): a handle comes from the caller, so a bad one is the caller's
//! error, never stored-data corruption. The payload is not a credential: every mutation is fenced in the
//! database against the stored lease (id, epoch, attempt) and its expiry.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{EngineError, ValidationKind};
use crate::id::{AttemptId, AttemptIndex, ExecutionId, LaneId, LeaseEpoch, LeaseId, WorkerInstanceId};

/// The backend family that minted a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum BackendTag {
    /// Valkey.
    Valkey = 1,
    /// PostgreSQL.
    Postgres = 2,
    /// SQLite.
    Sqlite = 3,
}

impl BackendTag {
    /// Label used in errors.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Valkey => "valkey",
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

/// How the handle's lease was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HandleKind {
    /// A new attempt (first try or a retry).
    Fresh,
    /// The same attempt continued after a delay or suspension.
    Resumed,
    /// Informational: the execution is suspended; the lease is gone.
    Suspended,
    /// A new attempt that took over an expired or revoked lease.
    Reclaimed,
}

impl HandleKind {
    /// Snake_case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Resumed => "resumed",
            Self::Suspended => "suspended",
            Self::Reclaimed => "reclaimed",
        }
    }

    /// Parses a stored label; anything else is `Validation(Corruption)` (a label sent by a
    /// caller is checked by the handle-token parser instead).
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s {
            "fresh" => Ok(Self::Fresh),
            "resumed" => Ok(Self::Resumed),
            "suspended" => Ok(Self::Suspended),
            "reclaimed" => Ok(Self::Reclaimed),
            other => Err(EngineError::validation(ValidationKind::Corruption, format!("unknown handle kind {other:?}"))),
        }
    }
}

/// Opaque handle bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct HandleOpaque(pub Box<[u8]>);

impl fmt::Debug for HandleOpaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandleOpaque(len={})", self.0.len())
    }
}

/// What a worker holds while it owns an execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Handle {
    /// Minting backend family.
    pub backend: BackendTag,
    /// Claim kind.
    pub kind: HandleKind,
    /// Backend-specific payload.
    pub opaque: HandleOpaque,
}

impl Handle {
    /// The execution this handle names, read from the head of the payload without decoding
    /// the rest (the backend decodes and checks the whole payload when the handle is used).
    /// A payload too short to name one is `InvalidHandle`.
    pub fn execution_id(&self) -> Result<ExecutionId, EngineError> {
        let mut r = Reader(&self.opaque.0);
        let id = (|| {
            if r.take(4)? != PAYLOAD_MAGIC {
                return None;
            }
            let partition = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
            Some(ExecutionId::from_parts(partition, Uuid::from_slice(r.take(16)?).ok()?))
        })();
        id.ok_or_else(malformed_payload)
    }
}

/// The fence triple that identifies one lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeaseFence {
    /// Lease id (new on every claim).
    pub lease_id: LeaseId,
    /// Lease epoch (monotonic per execution).
    pub lease_epoch: LeaseEpoch,
    /// Attempt the lease belongs to.
    pub attempt_id: AttemptId,
}

/// The decoded contents of a handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlePayload {
    /// Execution.
    pub execution_id: ExecutionId,
    /// Attempt index.
    pub attempt_index: AttemptIndex,
    /// Attempt id.
    pub attempt_id: AttemptId,
    /// Lease id.
    pub lease_id: LeaseId,
    /// Lease epoch.
    pub lease_epoch: LeaseEpoch,
    /// TTL used for renewals.
    pub lease_ttl_ms: u64,
    /// Lane the execution was claimed from.
    pub lane_id: LaneId,
    /// Worker instance that claimed it.
    pub worker_instance_id: WorkerInstanceId,
}

const PAYLOAD_MAGIC: &[u8; 4] = b"FFH1";

impl HandlePayload {
    /// The fence triple of this lease.
    pub fn fence(&self) -> LeaseFence {
        LeaseFence { lease_id: self.lease_id, lease_epoch: self.lease_epoch, attempt_id: self.attempt_id }
    }

    /// Encodes into a handle of `backend` and `kind`.
    pub fn into_handle(&self, backend: BackendTag, kind: HandleKind) -> Handle {
        let lane = self.lane_id.as_str().as_bytes();
        let worker = self.worker_instance_id.as_str().as_bytes();
        let mut b = Vec::with_capacity(4 + 2 + 16 + 4 + 16 + 16 + 8 + 8 + 2 + lane.len() + 2 + worker.len());
        b.extend_from_slice(PAYLOAD_MAGIC);
        b.extend_from_slice(&self.execution_id.partition_index().to_be_bytes());
        b.extend_from_slice(self.execution_id.uuid().as_bytes());
        b.extend_from_slice(&self.attempt_index.0.to_be_bytes());
        b.extend_from_slice(self.attempt_id.0.as_bytes());
        b.extend_from_slice(self.lease_id.0.as_bytes());
        b.extend_from_slice(&self.lease_epoch.0.to_be_bytes());
        b.extend_from_slice(&self.lease_ttl_ms.to_be_bytes());
        push_str(&mut b, lane);
        push_str(&mut b, worker);
        Handle { backend, kind, opaque: HandleOpaque(b.into_boxed_slice()) }
    }

    /// Decodes a handle, checking that it was minted by `expected` backend. A damaged payload is
    /// `InvalidHandle`.
    pub fn from_handle(handle: &Handle, expected: BackendTag) -> Result<Self, EngineError> {
        if handle.backend != expected {
            return Err(EngineError::validation(
                ValidationKind::HandleFromOtherBackend,
                format!("expected={} actual={}", expected.label(), handle.backend.label()),
            ));
        }
        Self::decode(&handle.opaque.0).ok_or_else(malformed_payload)
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b);
        if r.take(4)? != PAYLOAD_MAGIC {
            return None;
        }
        let partition = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
        let exec_uuid = Uuid::from_slice(r.take(16)?).ok()?;
        let attempt_index = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
        let attempt_id = Uuid::from_slice(r.take(16)?).ok()?;
        let lease_id = Uuid::from_slice(r.take(16)?).ok()?;
        let epoch = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let ttl = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let lane = r.string()?;
        let worker = r.string()?;
        if !r.0.is_empty() {
            return None;
        }
        Some(Self {
            execution_id: ExecutionId::from_parts(partition, exec_uuid),
            attempt_index: AttemptIndex(attempt_index),
            attempt_id: AttemptId(attempt_id),
            lease_id: LeaseId(lease_id),
            lease_epoch: LeaseEpoch(epoch),
            lease_ttl_ms: ttl,
            lane_id: LaneId::try_new(lane).ok()?,
            worker_instance_id: WorkerInstanceId(worker),
        })
    }
}

fn malformed_payload() -> EngineError {
    EngineError::validation(ValidationKind::InvalidHandle, "handle payload is malformed")
}

fn push_str(b: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(&s[..len as usize]);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn string(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> HandlePayload {
        HandlePayload {
            execution_id: ExecutionId::in_partition(3),
            attempt_index: AttemptIndex(2),
            attempt_id: AttemptId::new(),
            lease_id: LeaseId::new(),
            lease_epoch: LeaseEpoch(7),
            lease_ttl_ms: 30_000,
            lane_id: LaneId::try_new("default").unwrap(),
            worker_instance_id: WorkerInstanceId::new("w-1"),
        }
    }

    #[test]
    fn round_trip() {
        let p = payload();
        let h = p.into_handle(BackendTag::Postgres, HandleKind::Fresh);
        assert_eq!(HandlePayload::from_handle(&h, BackendTag::Postgres).unwrap(), p);
    }

    #[test]
    fn other_backend_rejected() {
        let h = payload().into_handle(BackendTag::Valkey, HandleKind::Fresh);
        let err = HandlePayload::from_handle(&h, BackendTag::Postgres).unwrap_err();
        assert_eq!(err.code(), "handle_from_other_backend");
    }

    #[test]
    fn damaged_payload_rejected() {
        let mut h = payload().into_handle(BackendTag::Postgres, HandleKind::Fresh);
        let mut bytes = h.opaque.0.to_vec();
        bytes.pop();
        h.opaque = HandleOpaque(bytes.into_boxed_slice());
        assert_eq!(HandlePayload::from_handle(&h, BackendTag::Postgres).unwrap_err().code(), "invalid_handle");
        h.opaque = HandleOpaque(Box::new([0u8; 3]));
        assert_eq!(HandlePayload::from_handle(&h, BackendTag::Postgres).unwrap_err().code(), "invalid_handle");
    }

    #[test]
    fn execution_id_is_read_from_the_payload_head() {
        let p = payload();
        let mut h = p.into_handle(BackendTag::Postgres, HandleKind::Fresh);
        assert_eq!(h.execution_id().unwrap(), p.execution_id);
        h.opaque = HandleOpaque(Box::new([0u8; 3]));
        assert_eq!(h.execution_id().unwrap_err().code(), "invalid_handle");
        h.opaque = HandleOpaque(Box::new(*b"FFH1\0\x03"));
        assert_eq!(h.execution_id().unwrap_err().code(), "invalid_handle");
    }
}
