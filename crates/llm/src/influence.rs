//! Gradient influence on LoRA parameters: which training examples pushed a fine-tune towards
//! an answer.
//!
//! For an example, the gradient of its mean next-token loss (on its trained tokens) with
//! respect to the adapter's A and B matrices is computed with the base model frozen, then
//! sketched to a fixed size: each layer's gradients fall into `width` buckets by a seeded
//! CountSketch (bucket and ±1 sign from a hash of the parameter and element index), so
//! `⟨sketch(g), sketch(h)⟩` is an unbiased estimate of `⟨g, h⟩` per layer, with no projection
//! matrix to store (a dense one would be millions × thousands here). Keeping layers apart is
//! what the per-layer DataInf approximation needs.
//!
//! Scores, for a response's sketched gradient `t` and training example `i`'s `gᵢ`:
//!
//! ```text
//! TracIn     s(i) = Σ_l ⟨t_l, g_il⟩
//! DataInf    s(i) = Σ_l (1/λ_l) · ( ⟨t_l, g_il⟩ − (1/n) Σ_j ⟨t_l, g_jl⟩ ⟨g_jl, g_il⟩ / (λ_l + ‖g_jl‖²) )
//!            λ_l  = damping · mean_j ‖g_jl‖²
//! ```
//!
//! Both are signed so that positive means "training on `i` lowered the response's loss"
//! (helped produce it). DataInf replaces the Hessian inverse of influence functions by a
//! closed form per layer (Kwon et al., 2023); its inner sum is one vector per layer, so scoring
//! all `n` examples costs O(n · layers · width). Accumulation is in f64 over a fixed order, so a
//! score depends only on the stored sketches and the query.

use candle_core::Var;

use crate::LlmError;
use crate::lora::LoraAdapter;
use crate::model::Llama;
use crate::sampling::splitmix64;
use crate::train::{Example, PackedRow, rows_loss};

/// How gradients are sketched: `width` buckets per transformer layer, hashed from `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sketch {
    pub width: usize,
    pub seed: u64,
}

impl Default for Sketch {
    fn default() -> Self {
        Self {
            width: 128,
            seed: 0x6772_6164_5f73_6b74,
        }
    }
}

fn candle(e: candle_core::Error) -> LlmError {
    LlmError::Compute(e.to_string())
}

/// An adapter whose matrices are trainable variables, for taking gradients of it.
pub struct GradientProbe<'m> {
    model: &'m Llama,
    adapter: LoraAdapter,
    /// (layer, parameter number within the adapter, variable).
    vars: Vec<(usize, u64, Var)>,
    layers: usize,
}

impl<'m> GradientProbe<'m> {
    pub fn new(model: &'m Llama, adapter: &LoraAdapter) -> Result<Self, LlmError> {
        if model.weights() != crate::model::Weights::Dequantized {
            return Err(LlmError::Unsupported(
                "gradients need the model loaded with dequantized weights (Weights::Dequantized)"
                    .into(),
            ));
        }
        let mut adapter = adapter.clone();
        let mut vars = Vec::new();
        let mut number = 0u64;
        for (layer, pairs) in adapter.layers.iter_mut().enumerate() {
            for pair in pairs.iter_mut().flatten() {
                for tensor in [&mut pair.a_t, &mut pair.b_t] {
                    let var = Var::from_tensor(tensor).map_err(candle)?;
                    *tensor = var.as_tensor().clone();
                    vars.push((layer, number, var));
                    number += 1;
                }
            }
        }
        let layers = adapter.layers.len();
        Ok(Self {
            model,
            adapter,
            vars,
            layers,
        })
    }

    /// Sketch length: layers × width.
    pub fn dim(&self, sketch: &Sketch) -> usize {
        self.layers * sketch.width
    }

    /// The sketched gradient of `example`'s mean loss over its trained tokens, and that loss.
    pub fn gradient(
        &self,
        example: &Example,
        sketch: &Sketch,
    ) -> Result<(Vec<f32>, f32), LlmError> {
        if sketch.width == 0 {
            return Err(LlmError::BadInput("sketch width must be at least 1".into()));
        }
        let row = PackedRow::single(example);
        let (loss, count) = rows_loss(self.model, &[&row], None, &self.adapter)?;
        if count == 0 {
            return Err(LlmError::BadInput(
                "the example has no trained token to take a gradient of".into(),
            ));
        }
        let mean = (loss / count as f64).map_err(candle)?;
        let value = mean.to_scalar::<f32>().map_err(candle)?;
        let grads = mean.backward().map_err(candle)?;
        let mut out = vec![0f32; self.dim(sketch)];
        for (layer, number, var) in &self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g: Vec<f32> = g.flatten_all().and_then(|t| t.to_vec1()).map_err(candle)?;
            let block = &mut out[layer * sketch.width..(layer + 1) * sketch.width];
            count_sketch(&g, *number, sketch, block);
        }
        Ok((out, value))
    }
}

/// Adds `values` (parameter `number`'s elements) into `block` by CountSketch.
fn count_sketch(values: &[f32], number: u64, sketch: &Sketch, block: &mut [f32]) {
    let width = block.len() as u64;
    for (i, &v) in values.iter().enumerate() {
        let mut state = sketch.seed ^ number.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i as u64);
        let h = splitmix64(&mut state);
        let bucket = (h >> 1) % width;
        let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
        block[bucket as usize] += sign * v;
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// TracIn scores of every training sketch against `test` (see the module doc).
pub fn tracin(train: &[Vec<f32>], test: &[f32]) -> Vec<f64> {
    train.iter().map(|g| dot(g, test)).collect()
}

/// DataInf scores of every training sketch against `test`, layer blocks of `width`.
pub fn datainf(train: &[Vec<f32>], test: &[f32], width: usize, damping: f64) -> Vec<f64> {
    let n = train.len();
    if n == 0 || width == 0 {
        return vec![0.0; n];
    }
    let layers = test.len() / width;
    let mut scores = vec![0f64; n];
    for l in 0..layers {
        let range = l * width..(l + 1) * width;
        let t = &test[range.clone()];
        let norms: Vec<f64> = train
            .iter()
            .map(|g| dot(&g[range.clone()], &g[range.clone()]))
            .collect();
        let lambda = damping * norms.iter().sum::<f64>() / n as f64;
        if lambda <= 0.0 {
            continue; // this layer's adapter got no gradient
        }
        // v = (1/n) Σ_j ⟨t, g_j⟩ / (λ + ‖g_j‖²) · g_j
        let mut v = vec![0f64; width];
        for (g, norm) in train.iter().zip(&norms) {
            let g = &g[range.clone()];
            let c = dot(t, g) / (lambda + norm) / n as f64;
            for (acc, &x) in v.iter_mut().zip(g) {
                *acc += c * x as f64;
            }
        }
        for (score, g) in scores.iter_mut().zip(train) {
            let g = &g[range.clone()];
            let direct = dot(t, g);
            let correction: f64 = v.iter().zip(g).map(|(&a, &b)| a * b as f64).sum();
            *score += (direct - correction) / lambda;
        }
    }
    scores
}

/// Self-influence (TracIn): how strongly each example pulls on its own loss. Mislabeled and
/// poisoned rows stand out here, as the model has to bend most to fit them.
pub fn self_influence(train: &[Vec<f32>]) -> Vec<f64> {
    train.iter().map(|g| dot(g, g)).collect()
}

/// A score in fixed point (2⁻³² units), so records and rankings do not depend on the last
/// bits of floating point.
pub fn fixed_point(score: f64) -> i64 {
    (score * (1u64 << 32) as f64).round() as i64
}

/// On-disk store of per-example sketches keyed by row: `OLG1`, then width (u32), seed (u64),
/// dim (u32), count (u64), then per row its hash (32 bytes), contribution id (u64) and `dim`
/// little-endian f32. Written by the factory when a job ends, read by attribution.
#[derive(Debug, Clone, PartialEq)]
pub struct GradientStore {
    pub sketch: Sketch,
    pub dim: usize,
    pub rows: Vec<StoredGradient>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredGradient {
    pub row: [u8; 32],
    pub contribution_id: u64,
    pub gradient: Vec<f32>,
}

const MAGIC: &[u8; 4] = b"OLG1";

impl GradientStore {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28 + self.rows.len() * (40 + 4 * self.dim));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.sketch.width as u32).to_le_bytes());
        out.extend_from_slice(&self.sketch.seed.to_le_bytes());
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&(self.rows.len() as u64).to_le_bytes());
        for r in &self.rows {
            out.extend_from_slice(&r.row);
            out.extend_from_slice(&r.contribution_id.to_le_bytes());
            for v in &r.gradient {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// Parses a store, refusing anything truncated, padded or inconsistent.
    pub fn decode(bytes: &[u8]) -> Result<Self, LlmError> {
        let bad = |what: &str| LlmError::BadInput(format!("gradient store: {what}"));
        if bytes.len() < 28 || &bytes[..4] != MAGIC {
            return Err(bad("not a gradient store (no OLG1 header)"));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        let width = u32_at(4) as usize;
        let seed = u64_at(8);
        let dim = u32_at(16) as usize;
        let count = u64_at(20);
        if width == 0 || dim == 0 || !dim.is_multiple_of(width) {
            return Err(bad(&format!(
                "dimension {dim} is not a multiple of width {width}"
            )));
        }
        let per_row = 40 + 4 * dim as u64;
        let expected = count
            .checked_mul(per_row)
            .and_then(|b| b.checked_add(28))
            .ok_or_else(|| bad("row count overflows"))?;
        if expected != bytes.len() as u64 {
            return Err(bad(&format!(
                "{count} rows of dimension {dim} need {expected} bytes, the file has {}",
                bytes.len()
            )));
        }
        let mut rows = Vec::with_capacity(count as usize);
        let mut o = 28;
        for _ in 0..count {
            let row: [u8; 32] = bytes[o..o + 32].try_into().expect("32 bytes");
            let contribution_id = u64_at(o + 32);
            let gradient = bytes[o + 40..o + 40 + 4 * dim]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            rows.push(StoredGradient {
                row,
                contribution_id,
                gradient,
            });
            o += per_row as usize;
        }
        Ok(Self {
            sketch: Sketch { width, seed },
            dim,
            rows,
        })
    }

    pub fn gradients(&self) -> Vec<Vec<f32>> {
        self.rows.iter().map(|r| r.gradient.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_sketch_preserves_inner_products_on_average() {
        let mut state = 7u64;
        let mut rand = || (splitmix64(&mut state) >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
        let a: Vec<f32> = (0..4_000).map(|_| rand()).collect();
        let b: Vec<f32> = a.iter().map(|x| x * 0.8 + rand() * 0.2).collect();
        let exact = dot(&a, &b);
        let mut estimates = Vec::new();
        for seed in 0..20 {
            let sketch = Sketch { width: 256, seed };
            let (mut sa, mut sb) = (vec![0f32; 256], vec![0f32; 256]);
            count_sketch(&a, 3, &sketch, &mut sa);
            count_sketch(&b, 3, &sketch, &mut sb);
            estimates.push(dot(&sa, &sb));
        }
        let mean = estimates.iter().sum::<f64>() / estimates.len() as f64;
        assert!((mean - exact).abs() / exact < 0.1, "{mean} vs {exact}");
    }

    #[test]
    fn datainf_ranks_the_aligned_example_first_and_scores_are_signed() {
        let train = vec![
            vec![1.0, 0.0, 0.0, 1.0],
            vec![0.0, 1.0, 1.0, 0.0],
            vec![-1.0, 0.0, 0.0, -1.0],
        ];
        let test = vec![0.9, 0.1, 0.0, 1.1];
        for scores in [tracin(&train, &test), datainf(&train, &test, 2, 0.1)] {
            assert!(scores[0] > scores[1] && scores[1] > scores[2], "{scores:?}");
            assert!(scores[0] > 0.0 && scores[2] < 0.0);
        }
        assert_eq!(self_influence(&train), vec![2.0, 2.0, 2.0]);
        assert_eq!(fixed_point(1.5), 3 << 31);
    }

    #[test]
    fn the_store_round_trips_and_refuses_damaged_bytes() {
        let store = GradientStore {
            sketch: Sketch { width: 2, seed: 9 },
            dim: 4,
            rows: vec![StoredGradient {
                row: [7; 32],
                contribution_id: 3,
                gradient: vec![1.0, -2.0, 0.5, 0.0],
            }],
        };
        let bytes = store.encode();
        assert_eq!(GradientStore::decode(&bytes).unwrap(), store);
        for cut in [0, 10, 27, bytes.len() - 1] {
            assert!(
                GradientStore::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        let err = GradientStore::decode(&padded).unwrap_err().to_string();
        assert!(err.contains("need"), "{err}");
    }
}
