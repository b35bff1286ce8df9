//! Merging an adapter into its base model: `W' = W + s·B·A` on every layer the adapter
//! targets, written as a new GGUF in which every other tensor and all metadata are copied as
//! they are. The result runs anywhere a GGUF runs (llama.cpp included), with no adapter.

use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file;
use candle_core::quantized::{GgmlDType, QTensor};

use crate::LlmError;
use crate::config::LlamaConfig;
use crate::lora::{LoraAdapter, Target};

/// How merged layers are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergedWeights {
    /// Exact: the merged sums as f32.
    F32,
    /// 8-bit blocks: ~4× smaller than f32 and close to it.
    Q8_0,
}

fn gguf_name(target: Target) -> &'static str {
    match target {
        Target::Q => "attn_q",
        Target::K => "attn_k",
        Target::V => "attn_v",
        Target::O => "attn_output",
        Target::Gate => "ffn_gate",
        Target::Up => "ffn_up",
        Target::Down => "ffn_down",
    }
}

fn candle(e: candle_core::Error) -> LlmError {
    LlmError::Compute(e.to_string())
}

/// Writes `base` with `adapter` merged in to `out`; returns how many matrices changed.
pub fn merge_into_gguf(
    base: &Path,
    adapter: &LoraAdapter,
    out: &Path,
    weights: MergedWeights,
) -> Result<usize, LlmError> {
    let (content, mut reader) = crate::gguf_check::open(base)?;
    let config = LlamaConfig::from_gguf(&content)?;
    if adapter.layers.len() != config.num_layers {
        return Err(LlmError::BadModel(format!(
            "the adapter has {} layers, the base model {}: it was trained for another base",
            adapter.layers.len(),
            config.num_layers
        )));
    }
    let device = Device::Cpu;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort_by_key(|n| content.tensor_infos[*n].offset);
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let mut merged = 0;
    for name in names {
        let tensor = content
            .tensor(&mut reader, name, &device)
            .map_err(|e| LlmError::BadModel(format!("cannot read tensor {name:?}: {e}")))?;
        let pair = name
            .strip_prefix("blk.")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(layer, rest)| {
                let layer: usize = layer.parse().ok()?;
                let target = Target::ALL
                    .into_iter()
                    .find(|t| rest == format!("{}.weight", gguf_name(*t)))?;
                adapter.layers.get(layer)?[target as usize].as_ref()
            });
        let Some(pair) = pair else {
            tensors.push((name.clone(), tensor));
            continue;
        };
        let compute = || -> candle_core::Result<QTensor> {
            let w = tensor.dequantize(&device)?;
            // (in, r) · (r, out) = (in, out); the weight is (out, in).
            let delta = (pair.a_t.matmul(&pair.b_t)?.t()? * adapter.scale())?;
            let sum = (w + delta)?.contiguous()?;
            let dtype = match weights {
                MergedWeights::F32 => GgmlDType::F32,
                MergedWeights::Q8_0 if sum.dim(1)? % 32 == 0 => GgmlDType::Q8_0,
                MergedWeights::Q8_0 => GgmlDType::F32,
            };
            QTensor::quantize(&sum, dtype)
        };
        tensors.push((name.clone(), compute().map_err(candle)?));
        merged += 1;
    }
    if merged == 0 {
        return Err(LlmError::BadModel(
            "the adapter touches no layer of this model".into(),
        ));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let partial = out.with_extension("gguf.partial");
    {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&partial).map_err(crate::io_error(&partial))?,
        );
        gguf_file::write(&mut file, &metadata, &tensor_refs).map_err(|e| LlmError::Io {
            path: partial.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        use std::io::Write;
        file.flush().map_err(crate::io_error(&partial))?;
        file.get_ref()
            .sync_all()
            .map_err(crate::io_error(&partial))?;
    }
    std::fs::rename(&partial, out).map_err(crate::io_error(out))?;
    Ok(merged)
}
