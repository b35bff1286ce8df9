//! Hugging Face model directories: `config.json`, `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), `tokenizer.json` and `tokenizer_config.json` (special
//! tokens, chat template) — the layout `transformers` and PEFT read and write.
//!
//! Weights are renamed to the GGUF names the model code uses, and the rows of `q_proj` and
//! `k_proj` are permuted into GGUF's RoPE order on load (and back on export), so a model is
//! the same model whichever format it arrived in.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::config::LlamaConfig;
use crate::lora::gguf_to_hf_rows;
use crate::model::{Llama, Weights};
use crate::{ChatTemplate, LlmError, Model, Tokenizer};

fn candle(e: candle_core::Error) -> LlmError {
    LlmError::Compute(e.to_string())
}

fn read_json(path: &Path) -> Result<serde_json::Value, LlmError> {
    let text = std::fs::read_to_string(path).map_err(crate::io_error(path))?;
    serde_json::from_str(&text).map_err(|e| LlmError::BadModel(format!("{}: {e}", path.display())))
}

/// The Hugging Face name of a GGUF tensor name, and the heads its rows are permuted by.
fn hf_name(gguf: &str, config: &LlamaConfig) -> Option<(String, Option<usize>)> {
    let simple = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = simple {
        return Some((name.to_string(), None));
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, heads) = match rest {
        "attn_norm.weight" => ("input_layernorm", None),
        "attn_q.weight" => ("self_attn.q_proj", Some(config.num_heads)),
        "attn_k.weight" => ("self_attn.k_proj", Some(config.num_kv_heads)),
        "attn_v.weight" => ("self_attn.v_proj", None),
        "attn_output.weight" => ("self_attn.o_proj", None),
        "ffn_norm.weight" => ("post_attention_layernorm", None),
        "ffn_gate.weight" => ("mlp.gate_proj", None),
        "ffn_up.weight" => ("mlp.up_proj", None),
        "ffn_down.weight" => ("mlp.down_proj", None),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{part}.weight"), heads))
}

/// Loads a Hugging Face llama directory.
pub fn load(dir: &Path, weights: Weights) -> Result<Model, LlmError> {
    let config = LlamaConfig::from_hf(&read_json(&dir.join("config.json"))?)?;
    let tokenizer_config = match dir.join("tokenizer_config.json") {
        path if path.exists() => read_json(&path)?,
        _ => serde_json::Value::Null,
    };
    let tokenizer = Tokenizer::from_hf(&dir.join("tokenizer.json"), &tokenizer_config)?;
    let chat = match tokenizer_config["chat_template"].as_str() {
        Some(template) => Some(ChatTemplate::from_template(template)?),
        None => None,
    };
    let device = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<String> = if index.exists() {
        let index = read_json(&index)?;
        let mut files: Vec<String> = index["weight_map"]
            .as_object()
            .ok_or_else(|| {
                LlmError::BadModel("model.safetensors.index.json has no weight_map".into())
            })?
            .values()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        files
    } else {
        vec!["model.safetensors".into()]
    };
    for file in files {
        if file.contains('/') || file.contains("..") {
            return Err(LlmError::BadModel(format!(
                "shard name {file:?} leaves the model directory"
            )));
        }
        let path = dir.join(&file);
        let shard = candle_core::safetensors::load(&path, &device)
            .map_err(|e| LlmError::BadModel(format!("{}: {e}", path.display())))?;
        tensors.extend(shard);
    }
    let tied = config_tied(dir)? || !tensors.contains_key("lm_head.weight");
    let names = config.clone();
    let mut tensor = |gguf: &str, shape: &[usize]| -> Result<QTensor, LlmError> {
        let (name, heads) = hf_name(gguf, &names)
            .ok_or_else(|| LlmError::BadModel(format!("no Hugging Face name for {gguf}")))?;
        let t = tensors.get(&name).ok_or_else(|| {
            LlmError::BadModel(format!("tensor {name:?} is missing from the safetensors"))
        })?;
        if t.dims() != shape {
            return Err(LlmError::BadModel(format!(
                "tensor {name:?} has shape {:?}, expected {shape:?} from config.json",
                t.dims()
            )));
        }
        let mut t = t.to_dtype(DType::F32).map_err(candle)?;
        if let Some(heads) = heads {
            let rows = gguf_to_hf_rows(shape[0], heads);
            let rows = Tensor::new(rows.as_slice(), &device).map_err(candle)?;
            t = t.index_select(&rows, 0).map_err(candle)?;
        }
        QTensor::quantize(&t, GgmlDType::F32).map_err(candle)
    };
    let llama = Llama::build(config, &mut tensor, tied, &device, weights)?;
    Ok(Model {
        llama,
        tokenizer,
        chat,
    })
}

fn config_tied(dir: &Path) -> Result<bool, LlmError> {
    Ok(read_json(&dir.join("config.json"))?["tie_word_embeddings"]
        .as_bool()
        .unwrap_or(false))
}

/// Writes the GGUF model at `gguf` as a Hugging Face directory (f32 weights).
pub fn export(gguf: &Path, dir: &Path) -> Result<(), LlmError> {
    let (content, mut reader) = crate::gguf_check::open(gguf)?;
    let config = LlamaConfig::from_gguf(&content)?;
    let tokenizer = Tokenizer::from_gguf(&content)?;
    std::fs::create_dir_all(dir).map_err(crate::io_error(dir))?;
    let device = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in content.tensor_infos.keys() {
        let Some((hf, heads)) = hf_name(name, &config) else {
            continue; // e.g. rope frequency tables some converters add
        };
        let mut t = content
            .tensor(&mut reader, name, &device)
            .and_then(|q| q.dequantize(&device))
            .map_err(|e| LlmError::BadModel(format!("cannot read tensor {name:?}: {e}")))?;
        if let Some(heads) = heads {
            let rows = t.dim(0).map_err(candle)?;
            let mut inverse = vec![0u32; rows];
            for (g, h) in gguf_to_hf_rows(rows, heads).into_iter().enumerate() {
                inverse[h as usize] = g as u32;
            }
            let inverse = Tensor::new(inverse.as_slice(), &device).map_err(candle)?;
            t = t.index_select(&inverse, 0).map_err(candle)?;
        }
        tensors.insert(hf, t);
    }
    let tied = !tensors.contains_key("lm_head.weight");
    let weights_path = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights_path).map_err(|e| LlmError::Io {
        path: weights_path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let write_json = |name: &str, value: serde_json::Value| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&value).expect("serialisable"),
        )
        .map_err(crate::io_error(&path))
    };
    write_json("config.json", config.to_hf(tied))?;
    tokenizer.save_hf(&dir.join("tokenizer.json"))?;
    let (bos, add_bos) = tokenizer.bos();
    let eos = tokenizer.eos().and_then(|id| tokenizer.token_text(id));
    let mut tokenizer_config = serde_json::json!({
        "add_bos_token": add_bos,
        "bos_token": bos.and_then(|id| tokenizer.token_text(id)),
        "eos_token": eos,
        "model_max_length": config.context_length,
    });
    if let Some(template) = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
    {
        tokenizer_config["chat_template"] = serde_json::Value::String(template.clone());
    }
    write_json("tokenizer_config.json", tokenizer_config)
}
