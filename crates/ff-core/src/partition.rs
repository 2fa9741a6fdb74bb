//! Logical partitions.
//!
//! A partition is a number baked into ids so that rows can be listed, scanned or distributed per
//! partition. Postgres keeps it as an ordinary indexed column; nothing is physically partitioned.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::id::LaneId;

const CRC16_XMODEM: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);

/// How many partitions each family has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PartitionConfig {
    /// Partitions shared by flows and executions.
    pub num_flow_partitions: u16,
    /// Partitions for budgets.
    pub num_budget_partitions: u16,
    /// Partitions for quota policies.
    pub num_quota_partitions: u16,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        Self { num_flow_partitions: 256, num_budget_partitions: 32, num_quota_partitions: 32 }
    }
}

impl PartitionConfig {
    /// The partition of standalone executions of `lane`: `crc16_xmodem(lane) % num_flow_partitions`.
    pub fn lane_partition(&self, lane: &LaneId) -> u16 {
        CRC16_XMODEM.checksum(lane.as_str().as_bytes()) % self.num_flow_partitions.max(1)
    }

    /// The partition of `flow` and of every execution minted for it:
    /// `crc16_xmodem(uuid bytes) % num_flow_partitions`.
    pub fn flow_partition(&self, flow: &crate::id::FlowId) -> u16 {
        CRC16_XMODEM.checksum(flow.0.as_bytes()) % self.num_flow_partitions.max(1)
    }

    /// The partition of a budget: `crc16_xmodem(uuid bytes) % num_budget_partitions`.
    pub fn budget_partition(&self, budget: &crate::id::BudgetId) -> Partition {
        let index = CRC16_XMODEM.checksum(budget.0.as_bytes()) % self.num_budget_partitions.max(1);
        Partition { family: PartitionFamily::Budget, index }
    }

    /// The partition of a quota policy: `crc16_xmodem(uuid bytes) % num_quota_partitions`.
    pub fn quota_partition(&self, policy: &crate::id::QuotaPolicyId) -> Partition {
        let index = CRC16_XMODEM.checksum(policy.0.as_bytes()) % self.num_quota_partitions.max(1);
        Partition { family: PartitionFamily::Quota, index }
    }

    /// Checks that `partition` is of `family` and exists under this configuration.
    pub fn check_partition(&self, partition: Partition, family: PartitionFamily) -> Result<(), EngineError> {
        let count = match family {
            PartitionFamily::Flow | PartitionFamily::Execution => self.num_flow_partitions,
            PartitionFamily::Budget => self.num_budget_partitions,
            PartitionFamily::Quota => self.num_quota_partitions,
        };
        if partition.family != family || partition.index >= count {
            return Err(EngineError::invalid(format!(
                "partition {} is not one of the {count} {family:?} partitions",
                partition.key().0
            )));
        }
        Ok(())
    }

    /// Checks that an execution partition index exists under this configuration.
    pub fn check_execution_partition(&self, index: u16) -> Result<(), EngineError> {
        if index >= self.num_flow_partitions {
            return Err(EngineError::invalid(format!(
                "partition {index} out of range: this deployment has {} execution partitions",
                self.num_flow_partitions
            )));
        }
        Ok(())
    }
}

/// A regular expression (no anchors) matching the decimal numbers `0..=max` written without
/// leading zeros, for JSON Schema patterns of ids that carry a partition index.
pub fn index_pattern(max: u16) -> String {
    let digits: Vec<u8> = max.to_string().bytes().map(|b| b - b'0').collect();
    let n = digits.len();
    let mut alternatives = vec![max.to_string()];
    // Same length as `max`: a common prefix, then a smaller digit, then anything.
    for i in 0..n {
        let lo = u8::from(i == 0 && n > 1);
        if digits[i] > lo {
            let prefix: String = digits[..i].iter().map(|d| char::from(b'0' + d)).collect();
            let rest = n - i - 1;
            let tail = if rest > 0 { format!("[0-9]{{{rest}}}") } else { String::new() };
            alternatives.push(format!("{prefix}[{lo}-{}]{tail}", digits[i] - 1));
        }
    }
    // Fewer digits than `max`.
    for len in (1..n).rev() {
        alternatives.push(if len == 1 { "[0-9]".to_owned() } else { format!("[1-9][0-9]{{{}}}", len - 1) });
    }
    alternatives.join("|")
}

/// The family a partition belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartitionFamily {
    /// Flows (and the executions minted for them).
    Flow,
    /// Executions; shares the `{fp:N}` space with flows.
    Execution,
    /// Budgets.
    Budget,
    /// Quota policies.
    Quota,
}

/// One partition: a family and an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Partition {
    /// Family.
    pub family: PartitionFamily,
    /// Index within the family.
    pub index: u16,
}

impl Partition {
    /// The execution partition with `index`.
    pub fn execution(index: u16) -> Self {
        Self { family: PartitionFamily::Execution, index }
    }

    /// The string key of this partition (`{fp:N}`, `{b:N}`, `{q:N}`).
    pub fn key(&self) -> PartitionKey {
        let tag = match self.family {
            PartitionFamily::Flow | PartitionFamily::Execution => "fp",
            PartitionFamily::Budget => "b",
            PartitionFamily::Quota => "q",
        };
        PartitionKey(format!("{{{tag}:{}}}", self.index))
    }
}

/// String form of a partition, e.g. `{fp:7}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct PartitionKey(pub String);

impl PartitionKey {
    /// Parses the key back into a partition; unknown shapes are `Validation(InvalidInput)`.
    pub fn parse(&self) -> Result<Partition, EngineError> {
        let bad = || EngineError::invalid(format!("malformed partition key {:?}", self.0));
        let inner = self.0.strip_prefix('{').and_then(|s| s.strip_suffix('}')).ok_or_else(bad)?;
        let (tag, n) = inner.split_once(':').ok_or_else(bad)?;
        let family = match tag {
            "fp" => PartitionFamily::Execution,
            "b" => PartitionFamily::Budget,
            "q" => PartitionFamily::Quota,
            _ => return Err(bad()),
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let index = n.parse().map_err(|_| bad())?;
        Ok(Partition { family, index })
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_partition_is_stable_and_in_range() {
        let cfg = PartitionConfig::default();
        let lane = LaneId::try_new("default").unwrap();
        let p = cfg.lane_partition(&lane);
        assert!(p < 256);
        assert_eq!(p, cfg.lane_partition(&lane));
    }

    #[test]
    fn index_pattern_matches_exactly_the_range() {
        fn matches(pattern: &str, s: &str) -> bool {
            // The pattern is a list of alternatives of literal digits, `[a-b]` classes and
            // `{n}` repeats; expand each alternative into per-position digit ranges.
            pattern.split('|').any(|alt| {
                let mut ranges: Vec<(u8, u8)> = Vec::new();
                let b = alt.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    match b[i] {
                        b'[' => {
                            ranges.push((b[i + 1], b[i + 3]));
                            i += 5;
                        }
                        b'{' => {
                            let end = alt[i..].find('}').unwrap() + i;
                            let count: usize = alt[i + 1..end].parse().unwrap();
                            let last = *ranges.last().unwrap();
                            ranges.extend(std::iter::repeat_n(last, count - 1));
                            i = end + 1;
                        }
                        d => {
                            ranges.push((d, d));
                            i += 1;
                        }
                    }
                }
                ranges.len() == s.len() && s.bytes().zip(&ranges).all(|(c, (lo, hi))| (*lo..=*hi).contains(&c))
            })
        }
        for max in [0u16, 1, 9, 10, 99, 100, 255, 1000, 4095, u16::MAX] {
            let p = index_pattern(max);
            for n in 0..=u32::from(max) + 20 {
                assert_eq!(matches(&p, &n.to_string()), n <= u32::from(max), "{max}: {n} against {p}");
            }
            assert!(!matches(&p, "01"), "{p}");
        }
    }

    #[test]
    fn partition_key_round_trips() {
        let p = Partition::execution(42);
        assert_eq!(p.key().0, "{fp:42}");
        assert_eq!(p.key().parse().unwrap().index, 42);
        assert!(PartitionKey("{zz:1}".into()).parse().is_err());
        assert!(PartitionKey("fp:1".into()).parse().is_err());
    }
}
