//! Identifiers and scalar newtypes.
//!
//! Invariants: an [`ExecutionId`] always carries the partition it was minted in (`{fp:N}:<uuid>`)
//! and never changes across retries or reclaims; a [`LaneId`] is 1..=64 printable ASCII bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::EngineError;
use crate::partition::PartitionConfig;

/// Identifier of one execution: its partition index plus a UUID, written `{fp:N}:<uuid>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutionId {
    partition: u16,
    uuid: Uuid,
}

impl ExecutionId {
    /// Builds an id from its parts.
    pub fn from_parts(partition: u16, uuid: Uuid) -> Self {
        Self { partition, uuid }
    }

    /// Mints a fresh id for a standalone execution of `lane`: its partition is derived from the
    /// lane name, so every solo execution of a lane shares one partition.
    pub fn solo(lane: &LaneId, config: &PartitionConfig) -> Self {
        Self::from_parts(config.lane_partition(lane), Uuid::new_v4())
    }

    /// Mints a fresh id for a member of `flow`: in the flow's partition, which
    /// `add_execution_to_flow` requires.
    pub fn for_flow(flow: &FlowId, config: &PartitionConfig) -> Self {
        Self::from_parts(flow.partition(config), Uuid::new_v4())
    }

    /// Mints a fresh id in an explicit partition.
    pub fn in_partition(partition: u16) -> Self {
        Self::from_parts(partition, Uuid::new_v4())
    }

    /// Parses `{fp:N}:<uuid>`; any other shape is a `Validation(InvalidInput)` error.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        let bad = || EngineError::invalid(format!("malformed execution id {s:?}: expected {{fp:N}}:<uuid>"));
        let rest = s.strip_prefix("{fp:").ok_or_else(bad)?;
        let (n, uuid) = rest.split_once("}:").ok_or_else(bad)?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let partition: u16 = n.parse().map_err(|_| bad())?;
        let uuid = Uuid::parse_str(uuid).map_err(|_| bad())?;
        Ok(Self { partition, uuid })
    }

    /// The partition index baked into the id.
    pub fn partition_index(&self) -> u16 {
        self.partition
    }

    /// The UUID part.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{fp:{}}}:{}", self.partition, self.uuid)
    }
}

impl fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExecutionId({self})")
    }
}

impl FromStr for ExecutionId {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ExecutionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ExecutionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for ExecutionId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ExecutionId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": execution_id_pattern(u16::MAX),
            "description": "`{fp:<partition>}:<uuid>`",
        })
    }
}

/// JSON Schema pattern of an [`ExecutionId`] whose partition is at most `max_partition`.
pub fn execution_id_pattern(max_partition: u16) -> String {
    let uuid = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
    format!("^\\{{fp:(?:{})\\}}:{uuid}$", crate::partition::index_pattern(max_partition))
}

/// Maximum length of a lane name in bytes.
pub const LANE_ID_MAX_BYTES: usize = 64;

/// Name of a lane (a queue of executions). 1..=64 bytes of printable ASCII (0x20..=0x7e).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct LaneId(#[schemars(length(min = 1, max = LANE_ID_MAX_BYTES), pattern(LANE_ID_PATTERN))] String);

/// JSON Schema pattern of a lane name: printable ASCII.
pub const LANE_ID_PATTERN: &str = r"^[\x20-\x7e]+$";

impl LaneId {
    /// Validates and wraps a lane name.
    pub fn try_new(name: impl Into<String>) -> Result<Self, EngineError> {
        let name = name.into();
        if name.is_empty() || name.len() > LANE_ID_MAX_BYTES {
            return Err(EngineError::invalid(format!(
                "invalid lane id {name:?}: must be 1..={LANE_ID_MAX_BYTES} bytes"
            )));
        }
        if let Some(b) = name.bytes().find(|b| !(0x20..=0x7e).contains(b)) {
            return Err(EngineError::invalid(format!(
                "invalid lane id {name:?}: byte 0x{b:02x} is not printable ASCII"
            )));
        }
        Ok(Self(name))
    }

    /// The lane name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LaneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for LaneId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::try_new(s).map_err(serde::de::Error::custom)
    }
}

macro_rules! uuid_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Mints a fresh random id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
            /// Parses a UUID string.
            pub fn parse(s: &str) -> Result<Self, EngineError> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| EngineError::invalid(format!(concat!("malformed ", stringify!($name), " {:?}"), s)))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// Identifier of one lease (minted on every claim).
    LeaseId
);
uuid_id!(
    /// Identifier of one attempt row.
    AttemptId
);
uuid_id!(
    /// Identifier of a flow (a DAG of executions).
    FlowId
);
uuid_id!(
    /// Identifier of a dependency edge within a flow.
    EdgeId
);
uuid_id!(
    /// Identifier of a waitpoint: one thing a suspended execution waits on.
    WaitpointId
);
uuid_id!(
    /// Identifier of one suspension of an execution.
    SuspensionId
);
uuid_id!(
    /// Identifier of one delivered signal.
    SignalId
);
uuid_id!(
    /// Identifier of a budget: limits on usage (tokens, dollars...) that executions draw on.
    BudgetId
);
uuid_id!(
    /// Identifier of a quota policy: rate and concurrency limits on the executions attached.
    QuotaPolicyId
);
uuid_id!(
    /// Identifier of one claim grant.
    GrantId
);

impl FlowId {
    /// The partition this flow and its members live in: derived from the flow id alone, so
    /// every member of a flow shares one partition.
    pub fn partition(&self, config: &PartitionConfig) -> u16 {
        config.flow_partition(self)
    }
}

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident, min_bytes = $min:literal) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(transparent)]
        pub struct $name(
            #[schemars(
                length(min = $min, max = crate::execution::MAX_NAME_BYTES),
                pattern(crate::execution::NAME_PATTERN)
            )]
            pub String,
        );

        impl $name {
            /// Wraps a string.
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            /// The inner string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// Logical worker pool name, e.g. `gpu-pool-1` (1..=256 bytes, no control characters).
    WorkerId,
    min_bytes = 1
);
string_id!(
    /// One worker process or container (1..=256 bytes, no control characters).
    WorkerInstanceId,
    min_bytes = 1
);
string_id!(
    /// Tenant namespace an execution belongs to (0..=256 bytes, no control characters).
    Namespace,
    min_bytes = 0
);

impl WorkerId {
    /// 1..=256 bytes, no control characters.
    pub fn validate(&self) -> Result<(), EngineError> {
        crate::execution::validate_name("worker_id", &self.0, false)
    }
}

impl WorkerInstanceId {
    /// 1..=256 bytes, no control characters.
    pub fn validate(&self) -> Result<(), EngineError> {
        crate::execution::validate_name("worker_instance_id", &self.0, false)
    }
}

/// Index of an attempt within an execution, starting at 0.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct AttemptIndex(pub u32);

/// Monotonic fencing token of an execution's lease: +1 on every claim of any attempt.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct LeaseEpoch(pub u64);

/// Milliseconds since the Unix epoch, in the database's clock.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct TimestampMs(#[schemars(range(min = 0, max = MAX_TIMESTAMP_MS))] pub i64);

/// Upper bound accepted for any absolute timestamp (2200-01-01T00:00:00Z).
pub const MAX_TIMESTAMP_MS: i64 = 7_258_118_400_000;

impl TimestampMs {
    /// Validates an absolute timestamp supplied by a caller (`what` names the field).
    pub fn validate(self, what: &str) -> Result<Self, EngineError> {
        if self.0 < 0 || self.0 > MAX_TIMESTAMP_MS {
            return Err(EngineError::invalid(format!(
                "{what} {} is outside 0..={MAX_TIMESTAMP_MS} ms since the epoch",
                self.0
            )));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ValidationKind;

    #[test]
    fn execution_id_round_trips() {
        let id = ExecutionId::in_partition(17);
        let parsed = ExecutionId::parse(&id.to_string()).unwrap();
        assert_eq!(parsed, id);
        assert_eq!(parsed.partition_index(), 17);
    }

    #[test]
    fn execution_id_rejects_malformed() {
        for bad in [
            "",
            "abc",
            "{fp:}:0b8f6a3e-2f7c-4d5e-9a1b-3c4d5e6f7a8b",
            "{fp:x}:0b8f6a3e-2f7c-4d5e-9a1b-3c4d5e6f7a8b",
            "{fp:70000}:0b8f6a3e-2f7c-4d5e-9a1b-3c4d5e6f7a8b",
            "{fp:1}:not-a-uuid",
            "{fp:1}0b8f6a3e-2f7c-4d5e-9a1b-3c4d5e6f7a8b",
        ] {
            let err = ExecutionId::parse(bad).unwrap_err();
            assert!(matches!(err, EngineError::Validation { kind: ValidationKind::InvalidInput, .. }), "{bad}");
        }
    }

    #[test]
    fn lane_id_validation() {
        assert!(LaneId::try_new("default").is_ok());
        assert!(LaneId::try_new("a b~").is_ok());
        assert!(LaneId::try_new("").is_err());
        assert!(LaneId::try_new("x".repeat(65)).is_err());
        assert!(LaneId::try_new("tab\there").is_err());
        assert!(LaneId::try_new("é").is_err());
    }

    #[test]
    fn timestamp_bounds() {
        assert!(TimestampMs(-1).validate("t").is_err());
        assert!(TimestampMs(MAX_TIMESTAMP_MS + 1).validate("t").is_err());
        assert!(TimestampMs(1_700_000_000_000).validate("t").is_ok());
    }
}
