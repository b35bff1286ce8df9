//! LoRA adapters: `y = W·x + s · B·(A·x)` on any of the seven linear layers of a block, with
//! `s = alpha / r` (or `alpha / √r` for rsLoRA), stored in Hugging Face PEFT's layout
//! (`adapter_config.json` + `adapter_model.safetensors`, PEFT key names) so adapters move
//! between this runtime and the Python ecosystem.
//!
//! One layout detail matters: GGUF converters permute the rows of `q_proj` and `k_proj` for
//! llama.cpp's interleaved RoPE. PEFT adapters are written for the Hugging Face row order, so
//! `lora_B` of q and k is permuted the same way on load and back on save.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::LlmError;
use crate::config::LlamaConfig;
use crate::sampling::unit_interval;

/// The linear layers of a llama block, in PEFT's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    pub fn peft_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    fn parent(self) -> &'static str {
        match self {
            Target::Q | Target::K | Target::V | Target::O => "self_attn",
            _ => "mlp",
        }
    }

    pub fn from_peft_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.peft_name() == name)
    }

    /// (input, output) width of this layer in `c`.
    pub fn shape(self, c: &LlamaConfig) -> (usize, usize) {
        let kv = c.num_kv_heads * c.head_dim;
        match self {
            Target::Q | Target::O => (c.hidden_size, c.hidden_size),
            Target::K | Target::V => (c.hidden_size, kv),
            Target::Gate | Target::Up => (c.hidden_size, c.intermediate_size),
            Target::Down => (c.intermediate_size, c.hidden_size),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// `adapter_config.json`, the fields this runtime reads and writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    #[serde(default = "peft_type")]
    pub peft_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default)]
    pub use_rslora: bool,
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default = "task_type")]
    pub task_type: String,
    #[serde(default = "bias")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub inference_mode: bool,
}

fn peft_type() -> String {
    "LORA".into()
}
fn task_type() -> String {
    "CAUSAL_LM".into()
}
fn bias() -> String {
    "none".into()
}

impl LoraConfig {
    pub fn new(r: usize, alpha: f64, targets: &[Target]) -> Self {
        Self {
            peft_type: peft_type(),
            r,
            lora_alpha: alpha,
            lora_dropout: 0.0,
            use_rslora: false,
            target_modules: targets.iter().map(|t| t.peft_name().to_string()).collect(),
            base_model_name_or_path: None,
            task_type: task_type(),
            bias: bias(),
            fan_in_fan_out: false,
            inference_mode: true,
        }
    }

    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    pub fn targets(&self) -> Result<Vec<Target>, LlmError> {
        self.target_modules
            .iter()
            .map(|m| {
                Target::from_peft_name(m).ok_or_else(|| {
                    LlmError::BadInput(format!(
                        "target module {m:?} is not a llama linear layer (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"
                    ))
                })
            })
            .collect()
    }

    pub fn validate(&self) -> Result<(), LlmError> {
        if self.peft_type != "LORA" {
            return Err(LlmError::Unsupported(format!(
                "PEFT type {:?}; only LORA",
                self.peft_type
            )));
        }
        if self.r == 0 || self.r > 1024 {
            return Err(LlmError::BadInput(format!(
                "rank r must be in 1..=1024, got {}",
                self.r
            )));
        }
        if !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
            return Err(LlmError::BadInput(format!(
                "lora_alpha must be > 0, got {}",
                self.lora_alpha
            )));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(LlmError::BadInput(format!(
                "lora_dropout must be in [0, 1), got {}",
                self.lora_dropout
            )));
        }
        if self.fan_in_fan_out {
            return Err(LlmError::Unsupported(
                "fan_in_fan_out adapters (GPT-2 Conv1D layout)".into(),
            ));
        }
        if self.targets()?.is_empty() {
            return Err(LlmError::BadInput("target_modules is empty".into()));
        }
        Ok(())
    }
}

/// One layer's low-rank pair, kept transposed for `x · Aᵀ · Bᵀ`, in the GGUF row order.
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// (in, r)
    pub a_t: Tensor,
    /// (r, out)
    pub b_t: Tensor,
}

#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    /// `[layer][target]`.
    pub layers: Vec<[Option<LoraPair>; 7]>,
    scale: f64,
}

fn candle(e: candle_core::Error) -> LlmError {
    LlmError::Compute(e.to_string())
}

fn peft_key(layer: usize, target: Target, which: &str) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}.{which}.weight",
        target.parent(),
        target.peft_name()
    )
}

/// For q and k: GGUF row `g` holds Hugging Face row `hf_row[g]` (llama.cpp's permutation:
/// within each head, rows `i` and `i + d/2` become neighbours `2i` and `2i + 1`).
pub(crate) fn gguf_to_hf_rows(out: usize, heads: usize) -> Vec<u32> {
    let head_dim = out / heads;
    let half = head_dim / 2;
    (0..out)
        .map(|g| {
            let (h, within) = (g / head_dim, g % head_dim);
            let (i, k) = (within / 2, within % 2);
            (h * head_dim + k * half + i) as u32
        })
        .collect()
}

impl LoraAdapter {
    /// Scale `s` applied to `B·A·x`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// A fresh adapter as PEFT initialises one: A random (uniform ±1/√in), B zero, so it starts
    /// as the identity change.
    pub fn init(
        config: LoraConfig,
        model: &LlamaConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self, LlmError> {
        config.validate()?;
        let targets = config.targets()?;
        let mut state = seed;
        let mut layers = Vec::with_capacity(model.num_layers);
        for _ in 0..model.num_layers {
            let mut pairs: [Option<LoraPair>; 7] = Default::default();
            for &t in &targets {
                let (input, output) = t.shape(model);
                let bound = 1.0 / (input as f64).sqrt();
                let a: Vec<f32> = (0..input * config.r)
                    .map(|_| ((unit_interval(&mut state) * 2.0 - 1.0) * bound) as f32)
                    .collect();
                pairs[t.index()] = Some(LoraPair {
                    a_t: Tensor::from_vec(a, (input, config.r), device).map_err(candle)?,
                    b_t: Tensor::zeros((config.r, output), DType::F32, device).map_err(candle)?,
                });
            }
            layers.push(pairs);
        }
        let scale = config.scale();
        Ok(Self {
            config,
            layers,
            scale,
        })
    }

    /// Loads a PEFT adapter directory, checking every tensor against the model's shapes.
    pub fn load_peft(dir: &Path, model: &LlamaConfig, device: &Device) -> Result<Self, LlmError> {
        let config_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|source| LlmError::Io {
            path: config_path.display().to_string(),
            source,
        })?;
        let config: LoraConfig = serde_json::from_str(&text)
            .map_err(|e| LlmError::BadInput(format!("{}: {e}", config_path.display())))?;
        config.validate()?;
        let weights_path = dir.join("adapter_model.safetensors");
        let tensors = candle_core::safetensors::load(&weights_path, device)
            .map_err(|e| LlmError::BadModel(format!("{}: {e}", weights_path.display())))?;
        Self::from_tensors(config, &tensors, model)
    }

    fn from_tensors(
        config: LoraConfig,
        tensors: &HashMap<String, Tensor>,
        model: &LlamaConfig,
    ) -> Result<Self, LlmError> {
        let targets = config.targets()?;
        let r = config.r;
        let mut layers: Vec<[Option<LoraPair>; 7]> =
            (0..model.num_layers).map(|_| Default::default()).collect();
        let mut used = 0;
        for (layer, pairs) in layers.iter_mut().enumerate() {
            for &t in &targets {
                let (input, output) = t.shape(model);
                let a_key = peft_key(layer, t, "lora_A");
                let b_key = peft_key(layer, t, "lora_B");
                let (Some(a), Some(b)) = (tensors.get(&a_key), tensors.get(&b_key)) else {
                    continue;
                };
                if a.dims() != [r, input] || b.dims() != [output, r] {
                    return Err(LlmError::BadModel(format!(
                        "adapter tensor shapes {:?} / {:?} at layer {layer} {} do not fit this model (expected [{r}, {input}] / [{output}, {r}]); was it trained for another base?",
                        a.dims(),
                        b.dims(),
                        t.peft_name()
                    )));
                }
                let a = a.to_dtype(DType::F32).map_err(candle)?;
                let mut b = b.to_dtype(DType::F32).map_err(candle)?;
                if let Some(heads) = permuted_heads(t, model) {
                    let hf_rows = gguf_to_hf_rows(output, heads);
                    let index = Tensor::new(hf_rows.as_slice(), b.device()).map_err(candle)?;
                    b = b.index_select(&index, 0).map_err(candle)?;
                }
                pairs[t.index()] = Some(LoraPair {
                    a_t: a.t().and_then(|x| x.contiguous()).map_err(candle)?,
                    b_t: b.t().and_then(|x| x.contiguous()).map_err(candle)?,
                });
                used += 2;
            }
        }
        if used == 0 {
            return Err(LlmError::BadModel(
                "the adapter holds no LoRA weights for this model's layers".into(),
            ));
        }
        if let Some(extra) = tensors.keys().find(|k| {
            k.contains(".layers.")
                && k.split(".layers.")
                    .nth(1)
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| n >= model.num_layers)
        }) {
            return Err(LlmError::BadModel(format!(
                "adapter tensor {extra} names a layer this {}-layer model does not have",
                model.num_layers
            )));
        }
        let scale = config.scale();
        Ok(Self {
            config,
            layers,
            scale,
        })
    }

    /// Writes the adapter as a PEFT directory.
    pub fn save_peft(&self, dir: &Path, model: &LlamaConfig) -> Result<(), LlmError> {
        std::fs::create_dir_all(dir).map_err(|source| LlmError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (layer, pairs) in self.layers.iter().enumerate() {
            for t in Target::ALL {
                let Some(pair) = &pairs[t.index()] else {
                    continue;
                };
                let a = pair.a_t.t().and_then(|x| x.contiguous()).map_err(candle)?;
                let mut b = pair.b_t.t().and_then(|x| x.contiguous()).map_err(candle)?;
                if let Some(heads) = permuted_heads(t, model) {
                    let (_, output) = t.shape(model);
                    let mut inverse = vec![0u32; output];
                    for (g, hf) in gguf_to_hf_rows(output, heads).into_iter().enumerate() {
                        inverse[hf as usize] = g as u32;
                    }
                    let index = Tensor::new(inverse.as_slice(), b.device()).map_err(candle)?;
                    b = b.index_select(&index, 0).map_err(candle)?;
                }
                tensors.insert(peft_key(layer, t, "lora_A"), a);
                tensors.insert(peft_key(layer, t, "lora_B"), b);
            }
        }
        let weights = dir.join("adapter_model.safetensors");
        candle_core::safetensors::save(&tensors, &weights).map_err(|e| LlmError::Io {
            path: weights.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let config = dir.join("adapter_config.json");
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(&self.config).expect("serialisable"),
        )
        .map_err(|source| LlmError::Io {
            path: config.display().to_string(),
            source,
        })
    }

    /// Whether the adapter has a pair on `target` of `layer`.
    pub fn touches(&self, layer: usize, target: Target) -> bool {
        self.pair(layer, target).is_some()
    }

    /// The pair on `target` of `layer`, if the adapter has one.
    pub(crate) fn pair(&self, layer: usize, target: Target) -> Option<&LoraPair> {
        self.layers
            .get(layer)
            .and_then(|p| p[target.index()].as_ref())
    }
}

/// Head count of the RoPE permutation GGUF applies to this layer's output rows, if any.
fn permuted_heads(t: Target, model: &LlamaConfig) -> Option<usize> {
    match t {
        Target::Q => Some(model.num_heads),
        Target::K => Some(model.num_kv_heads),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rope_permutation_pairs_each_half_of_a_head() {
        // One head of 8 rows: HF rows 0..4 are the first halves, 4..8 the second.
        assert_eq!(gguf_to_hf_rows(8, 1), vec![0, 4, 1, 5, 2, 6, 3, 7]);
        let two_heads = gguf_to_hf_rows(8, 2);
        assert_eq!(two_heads, vec![0, 2, 1, 3, 4, 6, 5, 7]);
        let mut sorted = gguf_to_hf_rows(576, 9);
        sorted.sort();
        assert_eq!(sorted, (0..576).collect::<Vec<u32>>(), "a permutation");
    }

    #[test]
    fn configs_are_validated_with_the_field_named() {
        let mut c = LoraConfig::new(8, 16.0, &[Target::Q]);
        assert_eq!(c.scale(), 2.0);
        c.use_rslora = true;
        assert!((c.scale() - 16.0 / 8f64.sqrt()).abs() < 1e-12);
        c.r = 0;
        assert!(c.validate().unwrap_err().to_string().contains("rank"));
        let mut c = LoraConfig::new(8, 16.0, &[]);
        c.target_modules = vec!["lm_head".into()];
        assert!(c.validate().unwrap_err().to_string().contains("lm_head"));
    }
}
