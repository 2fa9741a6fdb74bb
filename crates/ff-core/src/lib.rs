//! FlowFabric engine core: the vocabulary every backend and client shares.
//!
//! This crate owns identifiers, the execution state machine, retry / lease / timeout policies,
//! worker handles, the error taxonomy and the [`EngineBackend`] / [`CompletionBackend`] traits.
//! It contains no database code: backends (`ff-backend-postgres`) depend on it, never the reverse.

#![warn(missing_docs)]

pub mod admission;
pub mod backend;
pub mod capability;
pub mod error;
pub mod event;
pub mod execution;
pub mod flow;
pub mod handle;
pub mod id;
pub mod lease;
pub mod operator;
pub mod partition;
pub mod policy;
pub mod retention;
pub mod state;
pub mod stream;
pub mod suspension;
pub mod tag;
pub mod trace;
pub mod wire;
pub mod worker;

pub use admission::ReconcileCounts;
pub use admission::block::*;
pub use admission::budget::*;
pub use admission::grant::*;
pub use admission::quota::*;
pub use backend::prelude::*;
pub use capability::{BackendIdentity, Capabilities, CapabilitySet, Supports};
pub use error::{ConflictKind, ContentionKind, EngineError, StateKind, ValidationKind};
pub use execution::*;
pub use flow::*;
pub use handle::{BackendTag, Handle, HandleKind, HandleOpaque, HandlePayload, LeaseFence};
pub use id::*;
pub use lease::*;
pub use operator::*;
pub use partition::{Partition, PartitionConfig, PartitionFamily, PartitionKey};
pub use policy::*;
pub use retention::*;
pub use state::*;
pub use stream::*;
pub use suspension::*;
pub use trace::TraceContext;
pub use worker::*;
