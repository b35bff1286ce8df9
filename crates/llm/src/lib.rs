//! The model runtime: llama-family transformers on candle, loaded from GGUF.
//!
//! - [`config`]: hyperparameters from GGUF metadata (only `llama` is accepted).
//! - [`tokenizer`]: the GGUF's byte-level BPE tokenizer, split exactly as llama.cpp splits it.
//! - [`model`]: the transformer over quantized weights; KV caches belong to callers.
//! - [`lora`]: LoRA adapters on any linear layer, in Hugging Face PEFT's file layout.
//! - [`hf`]: Hugging Face directories (safetensors, tokenizer.json): load and export.
//! - [`merge`]: an adapter merged into its base, written as a new GGUF.
//! - [`chat`]: chat prompts in the model's format; [`sampling`] and [`generate`]: decoding.
//! - [`train`]: LoRA fine-tuning with exact resume from checkpoints.
//! - [`store`]: base models on disk by content hash, with names.
//! - [`testing`]: a tiny random llama written as a real GGUF, for tests anywhere.

pub mod chat;
pub mod config;
pub mod generate;
pub mod gguf_check;
pub mod hf;
pub mod influence;
pub mod lora;
pub mod merge;
pub mod model;
pub mod sampling;
pub mod store;
pub mod testing;
pub mod tokenizer;
pub mod train;

use std::io::{Read, Seek};
use std::path::Path;

pub use candle_core::Device;
use candle_core::quantized::gguf_file::Content;

pub use chat::{ChatMessage, ChatTemplate, Segment};
pub use generate::{Completion, DecodeStep, Decoder, FinishReason, generate, generate_with};
pub use lora::{LoraAdapter, LoraConfig, Target};
pub use model::{KvCache, Llama, TrainBatch, Weights};
pub use sampling::{Sampler, SamplingParams};
pub use store::{DEFAULT_MODEL, ModelStore, StoredModel};
pub use tokenizer::Tokenizer;
pub use train::{Example, Schedule, TrainConfig, TrainEvent, Trainer};

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("not a usable model file: {0}")]
    BadModel(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("{0}")]
    BadInput(String),
    #[error("the sequence needs {needed} positions but the model's context holds {context}")]
    ContextFull { needed: usize, context: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("computation failed: {0}")]
    Compute(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Turns an I/O error at `path` into an [`LlmError::Io`] naming the path.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LlmError + use<> {
    let path = path.display().to_string();
    move |source| LlmError::Io { path, source }
}

/// A loaded model: weights, tokenizer and chat format.
pub struct Model {
    pub llama: Llama,
    pub tokenizer: Tokenizer,
    pub chat: Option<ChatTemplate>,
}

impl Model {
    /// Loads a GGUF file. Truncated or corrupt files, unknown architectures and tokenizers are
    /// reported before any weight is used.
    pub fn load(path: &Path) -> Result<Self, LlmError> {
        Self::load_with(path, Weights::Quantized)
    }

    /// As [`Model::load`], choosing how linear layers compute. A directory is read as a
    /// Hugging Face model ([`hf::load`]).
    pub fn load_with(path: &Path, weights: Weights) -> Result<Self, LlmError> {
        if path.is_dir() {
            return hf::load(path, weights);
        }
        let file = std::fs::File::open(path).map_err(|source| LlmError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut reader = std::io::BufReader::new(file);
        Self::read_with(&mut reader, weights).map_err(|e| match e {
            LlmError::BadModel(m) => LlmError::BadModel(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The hyperparameters of a GGUF file, from its header alone (no weights are read).
    pub fn inspect(path: &Path) -> Result<config::LlamaConfig, LlmError> {
        config::LlamaConfig::from_gguf(&gguf_check::open(path)?.0)
    }

    /// Loads a GGUF from any reader (tests build models in memory).
    pub fn read<R: Read + Seek>(reader: &mut R) -> Result<Self, LlmError> {
        Self::read_with(reader, Weights::Quantized)
    }

    pub fn read_with<R: Read + Seek>(reader: &mut R, weights: Weights) -> Result<Self, LlmError> {
        gguf_check::check_header(reader)?;
        let content = Content::read(reader)
            .map_err(|e| LlmError::BadModel(format!("cannot parse the GGUF header: {e}")))?;
        let tokenizer = Tokenizer::from_gguf(&content)?;
        let chat = match content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
        {
            Some(template) => Some(ChatTemplate::from_template(template)?),
            None => None,
        };
        let llama = Llama::from_gguf_with(&content, reader, &Device::Cpu, weights)?;
        if llama.config().vocab_size < tokenizer.vocab_size() {
            return Err(LlmError::BadModel(format!(
                "the tokenizer has {} tokens but the model only {}",
                tokenizer.vocab_size(),
                llama.config().vocab_size
            )));
        }
        Ok(Self {
            llama,
            tokenizer,
            chat,
        })
    }

    /// Answers a conversation with the model's chat format.
    pub fn chat(
        &self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Completion, LlmError> {
        let template = self.chat.as_ref().ok_or_else(|| {
            LlmError::Unsupported("this model has no chat template; use a plain completion".into())
        })?;
        let prompt = self.tokenizer.encode(&template.render(messages)?)?;
        generate(&self.llama, &self.tokenizer, &prompt, params, on_text)
    }

    /// Continues `text`.
    pub fn complete(
        &self,
        text: &str,
        params: &SamplingParams,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Completion, LlmError> {
        let prompt = self.tokenizer.encode(text)?;
        generate(&self.llama, &self.tokenizer, &prompt, params, on_text)
    }
}
