//! A llama-family transformer over GGUF weights, written out so it reads like the paper:
//!
//! ```text
//! h  = x + Wo · attention(rope(Wq · rms(x)), rope(Wk · rms(x)), Wv · rms(x))
//! x' = h + Wdown · (silu(Wgate · rms(h)) ⊙ Wup · rms(h))
//! logits = Wout · rms(x_last)        (Wout = the embedding matrix when the file ties them)
//! ```
//!
//! Linear layers stay quantized, activations quantized per row as llama.cpp does on CPU:
//! Q4_0, Q4_1 and Q8_0 run on this project's kernels (`openledger-kernels`), other types on
//! candle's `QMatMul`. Inference (`model/infer.rs`) runs on plain f32 buffers and the kernel
//! thread pool; training runs candle's differentiable operations (below). The KV cache belongs
//! to the caller ([`KvCache`], one per sequence), so any number of conversations can share one
//! resident model. RoPE is the interleaved variant: GGUF converters permute Q and K rows for
//! it.

pub(crate) mod fused;
mod infer;

pub use infer::KV_BLOCK;

use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Tensor};

use openledger_kernels::{Format, QMatrix};

use crate::LlmError;
use crate::config::LlamaConfig;
use crate::lora::{LoraAdapter, Target};
use crate::sampling::unit_interval;

/// How linear layers compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// The file's quantized weights, activations quantized per row: llama.cpp's CPU scheme,
    /// and its results (greedy decoding of SmolLM2 Q4_1 matches llama.cpp token for token).
    Quantized,
    /// As `Quantized`, but weight types with no fast kernel (Q5_0, Q5_1) are re-quantized to
    /// Q8_0 at load, at the price of small numeric differences.
    Requantized,
    /// Weights expanded to f32 and plain matmuls: exact, ~4–8× the memory; what training and
    /// reference checks use.
    Dequantized,
}

/// A linear layer's weights, `(out, in)`.
enum Linear {
    /// Block-quantized weights this project has kernels for.
    Kernel(QMatrix),
    /// Anything else (K-quants, f16, and the f32 weights training differentiates through).
    Candle(QMatMul),
}

impl Linear {
    fn new(q: QTensor, weights: Weights, device: &Device) -> Result<Self, LlmError> {
        let q = match weights {
            Weights::Dequantized => {
                return Ok(Linear::Candle(QMatMul::Tensor(
                    q.dequantize(device).map_err(candle)?,
                )));
            }
            Weights::Requantized => requantize_for_speed(q, device)?,
            Weights::Quantized => q,
        };
        Ok(match kernel_matrix(&q, device)? {
            Some(m) => Linear::Kernel(m),
            None => Linear::Candle(QMatMul::from_qtensor(q).map_err(candle)?),
        })
    }
}

/// `q` as a kernel matrix, when its block format has a kernel and it lives in main memory.
fn kernel_matrix(q: &QTensor, device: &Device) -> Result<Option<QMatrix>, LlmError> {
    use candle_core::quantized::GgmlDType;
    let format = match q.dtype() {
        GgmlDType::Q4_0 => Format::Q4_0,
        GgmlDType::Q4_1 => Format::Q4_1,
        GgmlDType::Q8_0 => Format::Q8_0,
        _ => return Ok(None),
    };
    let &[rows, cols] = q.shape().dims() else {
        return Ok(None);
    };
    if !device.is_cpu() || cols % 32 != 0 {
        return Ok(None);
    }
    let bytes = q.data().map_err(candle)?.into_owned();
    QMatrix::new(format, rows, cols, bytes)
        .map(Some)
        .map_err(|e| LlmError::BadModel(e.to_string()))
}

struct Layer {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Tensor,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
    /// The norms' weights as plain vectors, for inference.
    attn_norm_v: Vec<f32>,
    ffn_norm_v: Vec<f32>,
}

pub struct Llama {
    config: LlamaConfig,
    /// Token embeddings; `None` when they are the output projection's kernel matrix (tied
    /// weights), which then serves the lookups too.
    embeddings: Option<Arc<QTensor>>,
    layers: Vec<Layer>,
    output_norm: Tensor,
    output_norm_v: Vec<f32>,
    output: Linear,
    /// RoPE tables, (positions, head_dim / 2), as tensors (training) and plain vectors.
    cos: Tensor,
    sin: Tensor,
    cos_v: Vec<f32>,
    sin_v: Vec<f32>,
    device: Device,
    weights: Weights,
}

/// One sequence's attention keys and values: per layer, position-major rows of
/// `kv_heads × head_dim` values (RoPE already applied to keys). Quantized models keep them in
/// half precision, as llama.cpp does: half the memory, and greedy outputs agree longer with
/// llama.cpp's; a dequantized model (the exact reference) keeps f32.
#[derive(Clone, Default)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
}

#[derive(Clone, Default)]
struct LayerKv {
    k: KvRows,
    v: KvRows,
}

#[derive(Clone)]
enum KvRows {
    Half(Vec<openledger_kernels::f16>),
    Full(Vec<f32>),
}

impl Default for KvRows {
    fn default() -> Self {
        KvRows::Half(Vec::new())
    }
}

impl KvCache {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn candle(e: candle_core::Error) -> LlmError {
    LlmError::Compute(e.to_string())
}

impl Llama {
    /// Loads the weights named by `content` from `reader` (the same GGUF file). Tensor shapes
    /// are checked against the hyperparameters before anything runs.
    pub fn from_gguf<R: Read + Seek>(
        content: &Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self, LlmError> {
        Self::from_gguf_with(content, reader, device, Weights::Quantized)
    }

    /// As [`Llama::from_gguf`], choosing how linear layers compute.
    pub fn from_gguf_with<R: Read + Seek>(
        content: &Content,
        reader: &mut R,
        device: &Device,
        weights: Weights,
    ) -> Result<Self, LlmError> {
        let config = LlamaConfig::from_gguf(content)?;
        let tied = !content.tensor_infos.contains_key("output.weight");
        let mut tensor = |name: &str, shape: &[usize]| -> Result<QTensor, LlmError> {
            let info = content.tensor_infos.get(name).ok_or_else(|| {
                LlmError::BadModel(format!("tensor {name:?} is missing from the GGUF"))
            })?;
            if info.shape.dims() != shape {
                return Err(LlmError::BadModel(format!(
                    "tensor {name:?} has shape {:?}, expected {shape:?} from the hyperparameters",
                    info.shape.dims()
                )));
            }
            content
                .tensor(reader, name, device)
                .map_err(|e| LlmError::BadModel(format!("cannot read tensor {name:?}: {e}")))
        };
        Self::build(config, &mut tensor, tied, device, weights)
    }

    /// Builds the model from a source of tensors named as in GGUF (`blk.N.attn_q.weight`, …,
    /// with q/k rows in GGUF's RoPE order); `tied` when the output projection is the embedding.
    pub(crate) fn build(
        config: LlamaConfig,
        tensor: &mut TensorSource<'_>,
        tied: bool,
        device: &Device,
        weights: Weights,
    ) -> Result<Self, LlmError> {
        let c = &config;
        let kv_width = c.num_kv_heads * c.head_dim;
        let embeddings = Arc::new(tensor("token_embd.weight", &[c.vocab_size, c.hidden_size])?);
        let norm = |q: QTensor| q.dequantize(device).map_err(candle);
        let matmul = |q: QTensor| Linear::new(q, weights, device);
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = |name: &str| format!("blk.{i}.{name}.weight");
            let attn_norm = norm(tensor(&p("attn_norm"), &[c.hidden_size])?)?;
            let ffn_norm = norm(tensor(&p("ffn_norm"), &[c.hidden_size])?)?;
            layers.push(Layer {
                attn_norm_v: attn_norm.to_vec1().map_err(candle)?,
                ffn_norm_v: ffn_norm.to_vec1().map_err(candle)?,
                attn_norm,
                wq: matmul(tensor(&p("attn_q"), &[c.hidden_size, c.hidden_size])?)?,
                wk: matmul(tensor(&p("attn_k"), &[kv_width, c.hidden_size])?)?,
                wv: matmul(tensor(&p("attn_v"), &[kv_width, c.hidden_size])?)?,
                wo: matmul(tensor(&p("attn_output"), &[c.hidden_size, c.hidden_size])?)?,
                ffn_norm,
                w_gate: matmul(tensor(
                    &p("ffn_gate"),
                    &[c.intermediate_size, c.hidden_size],
                )?)?,
                w_up: matmul(tensor(&p("ffn_up"), &[c.intermediate_size, c.hidden_size])?)?,
                w_down: matmul(tensor(
                    &p("ffn_down"),
                    &[c.hidden_size, c.intermediate_size],
                )?)?,
            });
        }
        let output_norm = norm(tensor("output_norm.weight", &[c.hidden_size])?)?;
        let (output, embeddings) = if !tied {
            let output = matmul(tensor("output.weight", &[c.vocab_size, c.hidden_size])?)?;
            (output, Some(embeddings))
        } else {
            // Tied embeddings: the output projection is the embedding matrix.
            match weights {
                Weights::Quantized | Weights::Requantized => {
                    match kernel_matrix(&embeddings, device)? {
                        Some(m) => (Linear::Kernel(m), None),
                        None => (
                            Linear::Candle(QMatMul::from_arc(embeddings.clone()).map_err(candle)?),
                            Some(embeddings),
                        ),
                    }
                }
                Weights::Dequantized => (
                    Linear::Candle(QMatMul::Tensor(
                        embeddings.dequantize(device).map_err(candle)?,
                    )),
                    Some(embeddings),
                ),
            }
        };
        let (cos, sin) = rope_tables(&config, device)?;
        Ok(Self {
            config,
            embeddings,
            layers,
            output_norm_v: output_norm.to_vec1().map_err(candle)?,
            output_norm,
            output,
            cos_v: cos
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .map_err(candle)?,
            sin_v: sin
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .map_err(candle)?,
            cos,
            sin,
            device: device.clone(),
            weights,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// How this model's linear layers compute.
    pub fn weights(&self) -> Weights {
        self.weights
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn new_cache(&self) -> KvCache {
        let rows = || match self.weights {
            Weights::Dequantized => KvRows::Full(Vec::new()),
            Weights::Quantized | Weights::Requantized => KvRows::Half(Vec::new()),
        };
        let layer = LayerKv {
            k: rows(),
            v: rows(),
        };
        KvCache {
            layers: vec![layer; self.config.num_layers],
            len: 0,
        }
    }

    /// Runs `tokens` (the next positions of the sequence whose cache is `cache`) and returns
    /// the logits of the last one, as a `Vec` of `vocab_size` floats.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>, LlmError> {
        self.forward_with(tokens, cache, None)
    }

    /// As [`Llama::forward`], with a LoRA adapter's deltas added to the layers it targets.
    pub fn forward_with(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        adapter: Option<&LoraAdapter>,
    ) -> Result<Vec<f32>, LlmError> {
        let mut steps = [Step {
            tokens,
            cache,
            adapter,
        }];
        let mut logits = self.forward_batch(&mut steps)?;
        Ok(logits.pop().expect("one sequence in, one out"))
    }

    /// The final hidden states (after the output norm) of a training batch, every position,
    /// through differentiable operations so gradients reach the adapter's parameters: (b, L,
    /// hidden). Packed sequences attend only within their own example.
    pub fn forward_train(
        &self,
        batch: &TrainBatch,
        adapter: &LoraAdapter,
        dropout: Option<&Dropout>,
    ) -> Result<Tensor, LlmError> {
        let c = &self.config;
        if self.weights != Weights::Dequantized {
            return Err(LlmError::Unsupported(
                "training needs the model loaded with dequantized weights (Weights::Dequantized): quantized matmuls have no gradient".into(),
            ));
        }
        let (b, len) = (batch.rows, batch.len);
        if batch.tokens.len() != b * len
            || batch.positions.len() != b * len
            || batch.segments.len() != b * len
        {
            return Err(LlmError::BadInput(format!(
                "a training batch of {b}×{len} needs {} tokens, positions and segment ids",
                b * len
            )));
        }
        if let Some(&bad) = batch.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(LlmError::BadInput(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        if let Some(&far) = batch
            .positions
            .iter()
            .find(|&&p| p as usize >= c.context_length)
        {
            return Err(LlmError::ContextFull {
                needed: far as usize + 1,
                context: c.context_length,
            });
        }
        let off = Dropout::new(0.0, 0);
        let dropout = dropout.unwrap_or(&off);
        let run = || -> candle_core::Result<Tensor> {
            let ids = Tensor::new(batch.tokens.as_slice(), &self.device)?;
            let Some(embeddings) = &self.embeddings else {
                candle_core::bail!("training needs dequantized weights");
            };
            let mut x = embeddings
                .embedding(&ids)?
                .reshape((b, len, c.hidden_size))?;
            let positions = Tensor::new(batch.positions.as_slice(), &self.device)?;
            let table = |t: &Tensor| t.index_select(&positions, 0)?.flatten_all()?.to_vec1();
            let pass = TrainPass {
                rope: Arc::new(fused::RopeRows {
                    cos: table(&self.cos)?,
                    sin: table(&self.sin)?,
                    half: c.head_dim / 2,
                }),
                attention: Arc::new(fused::AttentionShape {
                    rows: b,
                    len,
                    heads: c.num_heads,
                    kv_heads: c.num_kv_heads,
                    head_dim: c.head_dim,
                    segments: batch.segments.clone(),
                }),
                adapter,
                dropout,
            };
            for (index, layer) in self.layers.iter().enumerate() {
                x = self.block(index, layer, &x, &pass)?;
            }
            fused::rms_norm(
                &x,
                &Arc::new(self.output_norm.to_vec1()?),
                c.rms_norm_eps as f32,
            )
        };
        run().map_err(candle)
    }

    /// Logits of hidden states (`(n, hidden)` → `(n, vocab)`), differentiable.
    pub fn project_to_vocab(&self, hidden: &Tensor) -> Result<Tensor, LlmError> {
        frozen_linear(&self.output, hidden, None).map_err(candle)
    }

    /// One transformer block over a batch of packed rows, through differentiable operations
    /// (inference runs in `infer.rs`).
    fn block(
        &self,
        index: usize,
        layer: &Layer,
        x: &Tensor,
        pass: &TrainPass,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let eps = c.rms_norm_eps as f32;
        let TrainPass {
            rope,
            attention,
            adapter,
            dropout,
        } = pass;
        // W·x, plus s·B·A·x where the adapter has a pair on this layer.
        let linear = |w: &Linear, target: Target, x: &Tensor| -> candle_core::Result<Tensor> {
            let branch = adapter.pair(index, target).map(|pair| fused::LoraBranch {
                a_t: &pair.a_t,
                b_t: &pair.b_t,
                scale: adapter.scale() as f32,
                mask: (dropout.p > 0.0).then(|| dropout.mask(x.elem_count())),
            });
            frozen_linear(w, x, branch)
        };
        let norm = |w: &Tensor, x: &Tensor| fused::rms_norm(x, &Arc::new(w.to_vec1()?), eps);
        let h = norm(&layer.attn_norm, x)?;
        let q = fused::rope(&linear(&layer.wq, Target::Q, &h)?, rope, c.num_heads)?;
        let k = fused::rope(&linear(&layer.wk, Target::K, &h)?, rope, c.num_kv_heads)?;
        let v = linear(&layer.wv, Target::V, &h)?;
        let attended = fused::attention(&q, &k, &v, attention)?;
        let x = (x + linear(&layer.wo, Target::O, &attended)?)?;

        let h = norm(&layer.ffn_norm, &x)?;
        let gate = linear(&layer.w_gate, Target::Gate, &h)?;
        let up = linear(&layer.w_up, Target::Up, &h)?;
        x + linear(&layer.w_down, Target::Down, &fused::swiglu(&gate, &up)?)?
    }
}

/// A frozen base layer in a training pass (dequantized weights only), with the adapter's branch
/// where there is one.
fn frozen_linear(
    w: &Linear,
    x: &Tensor,
    lora: Option<fused::LoraBranch>,
) -> candle_core::Result<Tensor> {
    match w {
        Linear::Candle(QMatMul::Tensor(w)) => fused::linear(x, w, lora),
        Linear::Candle(_) | Linear::Kernel(_) => {
            candle_core::bail!("differentiable passes need dequantized weights")
        }
    }
}

/// Reads a tensor by its GGUF name, checking its shape.
pub(crate) type TensorSource<'a> = dyn FnMut(&str, &[usize]) -> Result<QTensor, LlmError> + 'a;

/// One sequence's part in a batched step (see [`Llama::forward_batch`]).
pub struct Step<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub adapter: Option<&'a LoraAdapter>,
}

/// What a training pass threads through every block: each token's RoPE angles (each packed
/// example restarts at 0), which tokens see which, one adapter and its dropout.
struct TrainPass<'a> {
    rope: Arc<fused::RopeRows>,
    attention: Arc<fused::AttentionShape>,
    adapter: &'a LoraAdapter,
    dropout: &'a Dropout,
}

/// A batch of packed training sequences, row-major `(rows, len)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainBatch {
    pub rows: usize,
    pub len: usize,
    pub tokens: Vec<u32>,
    /// Position of each token within its own example (RoPE restarts per example).
    pub positions: Vec<u32>,
    /// Which example of its row each token belongs to; tokens attend only within it.
    pub segments: Vec<u32>,
}

/// LoRA dropout on the adapter branch's input, from a seeded generator so a training run is
/// reproducible step for step (and after a resume).
#[derive(Debug)]
pub struct Dropout {
    pub p: f64,
    state: std::cell::Cell<u64>,
}

impl Dropout {
    pub fn new(p: f64, seed: u64) -> Self {
        Self {
            p,
            state: std::cell::Cell::new(seed),
        }
    }

    /// The generator's state (what a checkpoint saves).
    pub fn state(&self) -> u64 {
        self.state.get()
    }

    /// A mask of `len` elements: zero with probability `p`, `1 / (1 − p)` otherwise.
    fn mask(&self, len: usize) -> Vec<f32> {
        let mut state = self.state.get();
        let keep = 1.0 / (1.0 - self.p) as f32;
        let mask: Vec<f32> = (0..len)
            .map(|_| {
                if unit_interval(&mut state) < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        self.state.set(state);
        mask
    }
}

/// Q5_0 and Q5_1 have neither a kernel here nor a SIMD one in candle. With
/// [`Weights::Requantized`] such weights are re-quantized to Q8_0 once at load: Q8_0 keeps 8 bits
/// per weight, so the values barely move, and its dot product is vectorised.
fn requantize_for_speed(q: QTensor, device: &Device) -> Result<QTensor, LlmError> {
    use candle_core::quantized::GgmlDType;
    let slow = matches!(q.dtype(), GgmlDType::Q5_0 | GgmlDType::Q5_1);
    let inner = q.shape().dims().last().copied().unwrap_or(0);
    if !slow || inner % 32 != 0 {
        return Ok(q);
    }
    let dense = q.dequantize(device).map_err(candle)?;
    QTensor::quantize(&dense, GgmlDType::Q8_0).map_err(candle)
}

/// RoPE cos/sin tables for every position the model accepts.
///
/// Pair `i` at position `p` turns by `p · θ^(−2i/d)`, computed as llama.cpp computes it (the
/// angle multiplied by `θ^(−2/d)` pair after pair, in f32) so the tables carry the same
/// rounding as the reference implementation.
fn rope_tables(c: &LlamaConfig, device: &Device) -> Result<(Tensor, Tensor), LlmError> {
    let half = c.head_dim / 2;
    let step = c.rope_theta.powf(-2.0 / c.head_dim as f32);
    let positions = c.context_length;
    let (mut cos, mut sin) = (
        Vec::with_capacity(positions * half),
        Vec::with_capacity(positions * half),
    );
    for p in 0..positions {
        let mut angle = p as f32;
        for _ in 0..half {
            cos.push(angle.cos());
            sin.push(angle.sin());
            angle *= step;
        }
    }
    let table = |v: Vec<f32>| Tensor::from_vec(v, (positions, half), device).map_err(candle);
    Ok((table(cos)?, table(sin)?))
}

/// The index of the largest logit (greedy decoding).
pub fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}
