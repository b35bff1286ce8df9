//! Hyperparameters of a llama-family model, read from GGUF metadata.

use candle_core::quantized::gguf_file::{Content, Value};

use crate::LlmError;

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f64,
    pub context_length: usize,
}

impl LlamaConfig {
    /// Reads `llama.*` keys. Only the llama architecture is supported; anything else is a
    /// clear error before any tensor is read.
    pub fn from_gguf(content: &Content) -> Result<Self, LlmError> {
        let arch = string(content, "general.architecture")?;
        if arch != "llama" {
            return Err(LlmError::Unsupported(format!(
                "architecture {arch:?}; only llama-family models (\"llama\") are supported"
            )));
        }
        let hidden_size = uint(content, "llama.embedding_length")?;
        let num_heads = uint(content, "llama.attention.head_count")?;
        let num_kv_heads = uint(content, "llama.attention.head_count_kv").unwrap_or(num_heads);
        let head_dim = head_dim(hidden_size, num_heads, num_kv_heads)?;
        let vocab_size = match content.metadata.get("llama.vocab_size") {
            Some(v) => to_usize(v, "llama.vocab_size")?,
            None => content
                .metadata
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.to_vec().ok())
                .map(Vec::len)
                .ok_or_else(|| {
                    LlmError::BadModel(
                        "no vocabulary size (llama.vocab_size or tokenizer.ggml.tokens)".into(),
                    )
                })?,
        };
        Ok(Self {
            vocab_size,
            hidden_size,
            intermediate_size: uint(content, "llama.feed_forward_length")?,
            num_layers: uint(content, "llama.block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rope_theta: float(content, "llama.rope.freq_base").unwrap_or(10_000.0),
            rms_norm_eps: f64::from(
                float(content, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            ),
            context_length: uint(content, "llama.context_length").unwrap_or(2048),
        })
    }
}

/// The head width of an attention shape, after checking that the shape is consistent: heads
/// divide the width, key/value heads divide the heads, and the head width is even (RoPE pairs).
fn head_dim(hidden_size: usize, num_heads: usize, num_kv_heads: usize) -> Result<usize, LlmError> {
    if num_heads == 0
        || !hidden_size.is_multiple_of(num_heads)
        || num_kv_heads == 0
        || !num_heads.is_multiple_of(num_kv_heads)
    {
        return Err(LlmError::BadModel(format!(
            "inconsistent attention shape: {hidden_size} wide, {num_heads} heads, {num_kv_heads} key/value heads"
        )));
    }
    let head_dim = hidden_size / num_heads;
    if !head_dim.is_multiple_of(2) {
        return Err(LlmError::BadModel(format!(
            "head dimension {head_dim} is odd; RoPE needs pairs"
        )));
    }
    Ok(head_dim)
}

impl LlamaConfig {
    /// Reads a Hugging Face `config.json` of a `LlamaForCausalLM`.
    pub fn from_hf(json: &serde_json::Value) -> Result<Self, LlmError> {
        let model_type = json["model_type"].as_str().unwrap_or("");
        if model_type != "llama" {
            return Err(LlmError::Unsupported(format!(
                "model_type {model_type:?}; only llama-family models (\"llama\") are supported"
            )));
        }
        let uint = |key: &str| -> Result<usize, LlmError> {
            json[key]
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| LlmError::BadModel(format!("config.json has no integer {key:?}")))
        };
        let hidden_size = uint("hidden_size")?;
        let num_heads = uint("num_attention_heads")?;
        let num_kv_heads = uint("num_key_value_heads").unwrap_or(num_heads);
        Ok(Self {
            vocab_size: uint("vocab_size")?,
            hidden_size,
            intermediate_size: uint("intermediate_size")?,
            num_layers: uint("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim: head_dim(hidden_size, num_heads, num_kv_heads)?,
            rope_theta: json["rope_theta"].as_f64().unwrap_or(10_000.0) as f32,
            rms_norm_eps: json["rms_norm_eps"].as_f64().unwrap_or(1e-5),
            context_length: uint("max_position_embeddings").unwrap_or(2048),
        })
    }

    /// The Hugging Face `config.json` of this shape.
    pub fn to_hf(&self, tied: bool) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.context_length,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": tied,
            "torch_dtype": "float32",
        })
    }
}

fn missing(key: &str) -> LlmError {
    LlmError::BadModel(format!("GGUF metadata has no {key:?}"))
}

pub(crate) fn string<'a>(content: &'a Content, key: &str) -> Result<&'a String, LlmError> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| missing(key))?
        .to_string()
        .map_err(|_| LlmError::BadModel(format!("GGUF metadata {key:?} is not a string")))
}

fn to_usize(value: &Value, key: &str) -> Result<usize, LlmError> {
    let n = match value {
        Value::U8(v) => u64::from(*v),
        Value::U16(v) => u64::from(*v),
        Value::U32(v) => u64::from(*v),
        Value::U64(v) => *v,
        Value::I8(v) if *v >= 0 => *v as u64,
        Value::I16(v) if *v >= 0 => *v as u64,
        Value::I32(v) if *v >= 0 => *v as u64,
        Value::I64(v) if *v >= 0 => *v as u64,
        _ => {
            return Err(LlmError::BadModel(format!(
                "GGUF metadata {key:?} is not a non-negative integer"
            )));
        }
    };
    usize::try_from(n)
        .map_err(|_| LlmError::BadModel(format!("GGUF metadata {key:?} is too large")))
}

pub(crate) fn uint(content: &Content, key: &str) -> Result<usize, LlmError> {
    to_usize(content.metadata.get(key).ok_or_else(|| missing(key))?, key)
}

fn float(content: &Content, key: &str) -> Result<f32, LlmError> {
    match content.metadata.get(key).ok_or_else(|| missing(key))? {
        Value::F32(v) => Ok(*v),
        Value::F64(v) => Ok(*v as f32),
        _ => Err(LlmError::BadModel(format!(
            "GGUF metadata {key:?} is not a float"
        ))),
    }
}
