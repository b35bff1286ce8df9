//! ModelFactory: LoRA fine-tunes of a base model on a datanet snapshot, run as jobs.
//!
//! - [`examples`]: snapshot rows → training examples (chat template, loss on answers), split.
//! - [`jobs`]: the job queue — persisted, run one at a time on a worker thread, resumed from
//!   their last checkpoint after a restart or a `kill -9`, cancellable, with a progress stream.
//! - [`artifacts`]: what a finished job leaves: the adapter (PEFT safetensors) and a manifest
//!   (base model, snapshot roots, hyperparameters, evaluation), both content-addressed, ready
//!   for `publishModel` on the `Models` precompile.
//! - [`api`]: the HTTP API under `/v1/jobs` (create, list, inspect, cancel, resume, events).
//! - [`source`]: what the factory needs from the node (snapshot rows, grants, a blob store).
//!
//! Invariant: a job's directory (`<root>/jobs/<id>/`) is the whole truth about it; the
//! in-memory table is rebuilt from it at start.

pub mod api;
pub mod artifacts;
pub mod attribution;
pub mod examples;
pub mod jobs;
pub mod source;

pub use examples::{DataOptions, LossOn};
pub use jobs::{Factory, JobEvent, JobRecord, JobSpec, JobStatus};
pub use source::{ArtifactStore, SnapshotMeta, SnapshotSource};

use alloy_primitives::Address;

#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no job {0}")]
    UnknownJob(u64),
    #[error("no published snapshot {0}")]
    UnknownSnapshot(u64),
    #[error(
        "base model {0:?} is not in the model store; install it with `openledger model pull {0}`"
    )]
    UnknownBaseModel(String),
    #[error(
        "{who} may not read datanet {datanet}: it is permissioned and {who} holds no unexpired grant; request access (`openledger datanet request-access`) and ask the owner to grant it"
    )]
    NoGrant { datanet: u64, who: Address },
    #[error("only the job's owner {owner} may do this")]
    NotOwner { owner: Address },
    #[error("job {id} is {status}; {what}")]
    WrongState {
        id: u64,
        status: String,
        what: &'static str,
    },
    #[error("data service: {0}")]
    Data(String),
    #[error(transparent)]
    Model(#[from] openledger_llm::LlmError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> FactoryError {
    let path = path.display().to_string();
    move |source| FactoryError::Io { path, source }
}
