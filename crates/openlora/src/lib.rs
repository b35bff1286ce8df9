//! OpenLoRA: many LoRA fine-tunes served from one resident base model.
//!
//! - [`engine`]: continuous batching across adapters — one thread steps every active sequence
//!   with one `forward_batch` (base matmuls once for the batch, each row's adapter delta from
//!   its adapter's matrices); sequences join and leave between steps; vanished clients are
//!   dropped; KV memory is a budget of blocks, with admission by free memory and preemption
//!   (recompute) when it runs short.
//! - [`registry`]: adapters by name from PEFT directories, with an LRU RAM cache under a byte
//!   budget; loads happen off the engine thread.
//! - [`api`]: the OpenAI-compatible HTTP API and Prometheus `/metrics`.
//! - [`metering`]: who pays — admission against a deposit before compute, usage records kept
//!   on disk until settled on chain.

pub mod api;
pub mod engine;
pub mod histogram;
pub mod metering;
pub mod registry;

pub use api::{Serving, Slot, router};
pub use engine::{Engine, EngineConfig, Event, Request};
pub use metering::{Admission, Meter, MeterError, Usage, UsageLog, UsageRecord};
pub use registry::{Fetched, Registry};
