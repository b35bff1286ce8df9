//! The fine-tunes published in the on-chain `Models` registry, served by OpenLoRA as
//! `model-{id}`: each model's adapter and manifest are fetched by hash from the node's content
//! store and written once as a PEFT directory (the disk tier of the adapter cache), from which
//! the registry loads them into RAM on demand.
//!
//! Published models never change their adapter, so models already seen are not asked again;
//! each listing only reads the registry's count and the models published since.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use openledger_chain::modules::models::IModels;
use openledger_dataservice::DataService;
use openledger_factory::artifacts::Manifest;
use openledger_primitives::B256;
use openledger_primitives::addresses::MODELS;
use openledger_wallet::RpcClient;

use crate::chaintx::view;

/// One published model ready to serve.
#[derive(Debug, Clone)]
pub struct Published {
    pub name: String,
    pub dir: PathBuf,
    pub adapter_hash: B256,
}

pub struct PublishedAdapters {
    rpc: RpcClient,
    blobs: DataService,
    dir: PathBuf,
    /// The served base model's hash: adapters trained on another base are left out.
    base_hash: B256,
    /// Models ready to serve, and the highest id already looked at.
    seen: Mutex<(Vec<Published>, u64)>,
}

impl PublishedAdapters {
    pub fn new(rpc_url: &str, blobs: DataService, dir: PathBuf, base_hash: B256) -> Self {
        Self {
            rpc: RpcClient::with_timeout(rpc_url, Duration::from_secs(10)),
            blobs,
            dir,
            base_hash,
            seen: Mutex::new((Vec::new(), 0)),
        }
    }

    /// Every published model this node can serve, fetching the new ones first.
    pub fn list(&self) -> Vec<Published> {
        let mut seen = self.seen.lock().expect("published adapters lock");
        if let Err(e) = self.refresh(&mut seen) {
            tracing::warn!("cannot list published models: {e:#}");
        }
        seen.0.clone()
    }

    fn refresh(&self, seen: &mut (Vec<Published>, u64)) -> Result<()> {
        let count = view(&self.rpc, MODELS, IModels::modelCountCall {}, |e| e.into())?;
        while seen.1 < count {
            let id = seen.1 + 1;
            match self.materialize(id) {
                Ok(Some(p)) => seen.0.push(p),
                Ok(None) => {}
                // Not fetchable yet (the blob may arrive later): look again next time.
                Err(e) => {
                    tracing::debug!("model {id} not served yet: {e:#}");
                    return Ok(());
                }
            }
            seen.1 = id;
        }
        Ok(())
    }

    /// Writes model `id`'s PEFT directory if needed; `None` when it is not for this base.
    fn materialize(&self, id: u64) -> Result<Option<Published>> {
        let model = view(
            &self.rpc,
            MODELS,
            IModels::getModelCall { modelId: id },
            |e| e.into(),
        )?;
        if model.baseModelHash != self.base_hash {
            return Ok(None);
        }
        let name = format!("model-{id}");
        let dir = self.dir.join(format!("{}", model.adapterHash));
        let published = Published {
            name,
            dir: dir.clone(),
            adapter_hash: model.adapterHash,
        };
        if dir.join("adapter_model.safetensors").is_file() {
            return Ok(Some(published));
        }
        let manifest: Manifest = serde_json::from_slice(
            &self
                .blobs
                .blob(&model.manifestHash)
                .with_context(|| format!("manifest {} of model {id}", model.manifestHash))?,
        )
        .with_context(|| format!("manifest {} is not an adapter manifest", model.manifestHash))?;
        let weights = self
            .blobs
            .blob(&model.adapterHash)
            .with_context(|| format!("adapter {} of model {id}", model.adapterHash))?;
        write_peft_dir(
            &dir,
            &serde_json::to_vec_pretty(&manifest.adapter.config)?,
            &weights,
        )?;
        Ok(Some(published))
    }
}

/// Writes a PEFT directory atomically: into a temporary sibling, then renamed into place.
fn write_peft_dir(dir: &Path, config: &[u8], weights: &[u8]) -> Result<()> {
    let parent = dir.parent().context("adapter directory has no parent")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".tmp-{}",
        dir.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("adapter")
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for (name, bytes) in [
        ("adapter_config.json", config),
        ("adapter_model.safetensors", weights),
    ] {
        let path = tmp.join(name);
        std::fs::write(&path, bytes)
            .and_then(|()| std::fs::File::open(&path)?.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("cannot move into {}", dir.display()))?;
    Ok(())
}
