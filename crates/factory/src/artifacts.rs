//! What a finished job leaves, content-addressed: the adapter's weights (PEFT
//! `adapter_model.safetensors`, byte for byte) and a manifest that says what they are —
//! base model, adapter config, the snapshots and rows trained on, hyperparameters, evaluation.
//! `publishModel` on the `Models` precompile records both hashes; anyone can fetch the two
//! blobs and check them against the chain.

use std::path::Path;

use alloy_primitives::{Address, B256};
use openledger_llm::LoraConfig;
use openledger_llm::train::{EvalPoint, Finish, PackingReport, TrainConfig};
use serde::{Deserialize, Serialize};

use crate::examples::DataOptions;
use crate::source::ArtifactStore;
use crate::{FactoryError, io_error};

pub const MANIFEST_FORMAT: &str = "openledger/adapter-manifest@1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    pub owner: Address,
    pub job: u64,
    pub base_model: BaseModelRef,
    pub adapter: AdapterRef,
    pub datanets: Vec<SnapshotRef>,
    /// Hash of the list of training rows (one row hash per line, hex): what attribution reads.
    pub train_rows_hash: B256,
    pub hyperparameters: TrainConfig,
    pub data: DataOptions,
    pub hyperparams_hash: B256,
    pub training: TrainingSummary,
    pub evaluation: Evaluation,
    /// Per-example gradient sketches of the training rows under the final adapter, for the
    /// gradient path of attribution (absent in manifests made before it existed).
    #[serde(default)]
    pub gradients: Option<GradientsRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradientsRef {
    /// BLAKE3 of the gradient store (`openledger_llm::influence::GradientStore`).
    pub hash: B256,
    pub rows: usize,
    pub sketch: openledger_llm::influence::Sketch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModelRef {
    pub name: String,
    /// BLAKE3 of the GGUF file.
    pub hash: B256,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterRef {
    /// BLAKE3 of `adapter_model.safetensors`.
    pub hash: B256,
    pub bytes: u64,
    /// `adapter_config.json`, as PEFT reads it.
    pub config: LoraConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub datanet_id: u64,
    pub snapshot_id: u64,
    pub root: B256,
    pub train_rows: usize,
    pub eval_rows: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    pub steps: u64,
    pub tokens: u64,
    pub finish: Finish,
    pub seconds: f64,
    pub packing: PackingReport,
    pub evals: Vec<EvalPoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossFigures {
    pub loss: f64,
    pub perplexity: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub prompt: String,
    pub reference: String,
    pub base: String,
    pub adapter: String,
}

/// Held-out figures for the base model alone and with the adapter, and answers side by side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub base: Option<LossFigures>,
    pub adapter: Option<LossFigures>,
    pub answers: Vec<Answer>,
}

impl Evaluation {
    /// Fixed-point (three decimals) figures for `publishModel`: (loss, perplexity).
    pub fn milli(&self) -> (u64, u64) {
        let milli = |x: f64| (x * 1000.0).round().clamp(0.0, u64::MAX as f64) as u64;
        self.adapter
            .map_or((0, 0), |f| (milli(f.loss), milli(f.perplexity)))
    }
}

/// BLAKE3 of the canonical JSON of everything that decides training.
pub fn hyperparams_hash(train: &TrainConfig, data: &DataOptions) -> B256 {
    let canonical = serde_json::json!({ "train": train, "data": data });
    B256::from(*blake3::hash(&serde_json::to_vec(&canonical).expect("serialisable")).as_bytes())
}

/// Stores the adapter written under `adapter_dir` and the manifest; returns the manifest with
/// the adapter's hash filled in, and the manifest's own hash.
pub fn store(
    artifacts: &dyn ArtifactStore,
    adapter_dir: &Path,
    mut manifest: Manifest,
    train_rows: &[B256],
) -> Result<(Manifest, B256), FactoryError> {
    let weights_path = adapter_dir.join("adapter_model.safetensors");
    let weights = std::fs::read(&weights_path).map_err(io_error(&weights_path))?;
    manifest.adapter.bytes = weights.len() as u64;
    manifest.adapter.hash = artifacts.put(weights)?;
    let rows: String = train_rows.iter().map(|r| format!("{r:x}\n")).collect();
    manifest.train_rows_hash = artifacts.put(rows.into_bytes())?;
    let bytes = serde_json::to_vec_pretty(&manifest).expect("serialisable");
    let hash = artifacts.put(bytes)?;
    Ok((manifest, hash))
}
