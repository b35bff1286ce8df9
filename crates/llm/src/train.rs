//! LoRA fine-tuning: packed examples, masked next-token loss, AdamW with warmup and decay,
//! gradient accumulation and clipping, held-out evaluation with early stopping, and
//! checkpoints from which a run resumes to exactly the result it would have had uninterrupted.
//!
//! Exactness is by construction: the data order of every epoch is a seeded permutation, LoRA
//! dropout draws from a seeded generator whose state is checkpointed, CPU kernels are
//! deterministic, and a checkpoint holds the parameters, both Adam moments and that state.
//!
//! The optimizer is written here rather than taken from `candle_nn`: resuming exactly needs its
//! moments saved and restored, which `candle_nn::AdamW` keeps private.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::LlmError;
use crate::lora::{LoraAdapter, LoraConfig, Target};
use crate::model::{Dropout, Llama, TrainBatch};
use crate::sampling::splitmix64;

/// One training example: tokens, and for each token whether predicting it counts in the loss.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub trained: Vec<bool>,
}

impl Example {
    /// Tokens that carry loss (a token's prediction needs the one before it).
    pub fn loss_tokens(&self) -> usize {
        self.trained.iter().skip(1).filter(|&&t| t).count()
    }
}

/// Examples laid out in rows of at most `seq_len` tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PackedRow {
    tokens: Vec<u32>,
    trained: Vec<bool>,
    positions: Vec<u32>,
    segments: Vec<u32>,
}

impl PackedRow {
    /// A row holding one example alone.
    pub(crate) fn single(example: &Example) -> Self {
        let mut row = Self::default();
        row.push(example);
        row
    }

    fn push(&mut self, example: &Example) {
        let segment = self.segments.last().map_or(0, |s| s + 1);
        self.tokens.extend_from_slice(&example.tokens);
        self.trained.extend_from_slice(&example.trained);
        self.positions.extend(0..example.tokens.len() as u32);
        self.segments
            .extend(std::iter::repeat_n(segment, example.tokens.len()));
    }
}

/// What packing did with the examples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackingReport {
    pub examples: usize,
    pub rows: usize,
    /// Examples cut to `seq_len` because they were longer.
    pub truncated: usize,
    /// Examples with no token to learn (dropped).
    pub empty: usize,
    pub tokens: usize,
    pub loss_tokens: usize,
}

/// Packs examples into rows: each goes to the first row with room (first fit, in order), so a
/// row holds several short examples that still attend only within themselves. Without
/// packing, one example per row.
fn pack(examples: &[Example], seq_len: usize, packing: bool) -> (Vec<PackedRow>, PackingReport) {
    let mut rows: Vec<PackedRow> = Vec::new();
    let mut report = PackingReport {
        examples: examples.len(),
        ..Default::default()
    };
    for example in examples {
        let mut example = example.clone();
        if example.tokens.len() > seq_len {
            example.tokens.truncate(seq_len);
            example.trained.truncate(seq_len);
            report.truncated += 1;
        }
        if example.loss_tokens() == 0 {
            report.empty += 1;
            continue;
        }
        report.tokens += example.tokens.len();
        report.loss_tokens += example.loss_tokens();
        let room = |row: &PackedRow| row.tokens.len() + example.tokens.len() <= seq_len;
        match rows.iter_mut().find(|row| packing && room(row)) {
            Some(row) => row.push(&example),
            None => {
                let mut row = PackedRow::default();
                row.push(&example);
                rows.push(row);
            }
        }
    }
    report.rows = rows.len();
    (rows, report)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

/// Everything that decides a training run's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub rslora: bool,
    pub targets: Vec<String>,
    pub learning_rate: f64,
    pub schedule: Schedule,
    pub warmup_steps: u64,
    pub epochs: f64,
    /// Overrides `epochs` when set.
    pub max_steps: Option<u64>,
    pub micro_batch: usize,
    pub grad_accum: usize,
    /// Global gradient-norm clip (0 = off).
    pub max_grad_norm: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    pub seq_len: usize,
    pub packing: bool,
    pub seed: u64,
    /// Evaluate every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Stop after this many evaluations without improvement (0 = never).
    pub early_stopping_patience: u32,
    /// Checkpoint every this many steps (0 = only when stopping).
    pub checkpoint_every: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            rslora: false,
            targets: Target::ALL
                .iter()
                .map(|t| t.peft_name().to_string())
                .collect(),
            learning_rate: 2e-4,
            schedule: Schedule::Cosine,
            warmup_steps: 10,
            epochs: 1.0,
            max_steps: None,
            micro_batch: 1,
            grad_accum: 4,
            max_grad_norm: 1.0,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            seq_len: 512,
            packing: true,
            seed: 42,
            eval_every: 50,
            early_stopping_patience: 0,
            checkpoint_every: 50,
        }
    }
}

impl TrainConfig {
    pub fn lora(&self) -> LoraConfig {
        let mut lora = LoraConfig::new(self.rank, self.alpha, &[]);
        lora.target_modules = self.targets.clone();
        lora.lora_dropout = self.dropout;
        lora.use_rslora = self.rslora;
        lora
    }

    /// Rejects hyperparameters out of range, naming the field, before any work starts.
    pub fn validate(&self, model_context: usize) -> Result<(), LlmError> {
        self.lora().validate()?;
        let bad = |what: String| Err(LlmError::BadInput(what));
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate < 1.0)
        {
            return bad(format!(
                "learning_rate must be in (0, 1), got {}",
                self.learning_rate
            ));
        }
        if self.max_steps.is_none() && !(self.epochs.is_finite() && self.epochs > 0.0) {
            return bad(format!("epochs must be > 0, got {}", self.epochs));
        }
        if self.max_steps == Some(0) {
            return bad("max_steps must be at least 1".into());
        }
        if self.micro_batch == 0 || self.micro_batch > 1024 {
            return bad(format!(
                "micro_batch must be in 1..=1024, got {}",
                self.micro_batch
            ));
        }
        if self.grad_accum == 0 || self.grad_accum > 4096 {
            return bad(format!(
                "grad_accum must be in 1..=4096, got {}",
                self.grad_accum
            ));
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return bad(format!(
                "max_grad_norm must be ≥ 0, got {}",
                self.max_grad_norm
            ));
        }
        if !(self.weight_decay.is_finite() && (0.0..1.0).contains(&self.weight_decay)) {
            return bad(format!(
                "weight_decay must be in [0, 1), got {}",
                self.weight_decay
            ));
        }
        for (name, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(format!("{name} must be in [0, 1), got {beta}"));
            }
        }
        if !(self.adam_eps > 0.0 && self.adam_eps < 1.0) {
            return bad(format!("adam_eps must be in (0, 1), got {}", self.adam_eps));
        }
        if self.seq_len < 2 || self.seq_len > model_context {
            return bad(format!(
                "seq_len must be in 2..={model_context} (the model's context), got {}",
                self.seq_len
            ));
        }
        Ok(())
    }

    /// BLAKE3 of the canonical JSON: what a checkpoint must have been made with to resume.
    pub fn hash(&self) -> String {
        blake3::hash(&serde_json::to_vec(self).expect("serialisable"))
            .to_hex()
            .to_string()
    }

    fn learning_rate_at(&self, step: u64, total: u64) -> f64 {
        let step = step as f64 + 1.0;
        let warmup = self.warmup_steps as f64;
        if step <= warmup {
            return self.learning_rate * step / warmup;
        }
        let decay_steps = (total as f64 - warmup).max(1.0);
        let progress = ((step - warmup) / decay_steps).clamp(0.0, 1.0);
        match self.schedule {
            Schedule::Constant => self.learning_rate,
            Schedule::Linear => self.learning_rate * (1.0 - progress),
            Schedule::Cosine => {
                self.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// Where a run stands; saved with each checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// Position in the data: epoch and index into that epoch's order.
    pub epoch: u64,
    pub cursor: usize,
    pub dropout_state: u64,
    pub tokens_seen: u64,
    pub best_eval_loss: Option<f64>,
    pub best_step: Option<u64>,
    pub evals_without_improvement: u32,
    pub evals: Vec<EvalPoint>,
    pub last_loss: Option<f64>,
    pub finished: Option<Finish>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: u64,
    pub loss: f64,
    pub perplexity: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    Completed,
    EarlyStopped,
}

/// Progress, as it happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrainEvent {
    Step {
        step: u64,
        total_steps: u64,
        epoch: f64,
        loss: f64,
        learning_rate: f64,
        grad_norm: f64,
        tokens_per_second: f64,
        eta_seconds: f64,
    },
    Eval {
        step: u64,
        loss: f64,
        perplexity: f64,
    },
    Checkpoint {
        step: u64,
    },
}

/// How a call to [`Trainer::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Finished(Finish),
    /// The event callback asked to stop; a checkpoint was written if a directory was given.
    Stopped,
}

/// Summed next-token loss of `rows` and the number of tokens it covers.
pub(crate) fn rows_loss(
    model: &Llama,
    rows: &[&PackedRow],
    dropout: Option<&Dropout>,
    adapter: &LoraAdapter,
) -> Result<(Tensor, usize), LlmError> {
    let len = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
    let mut batch = TrainBatch {
        rows: rows.len(),
        len,
        tokens: Vec::with_capacity(rows.len() * len),
        positions: Vec::with_capacity(rows.len() * len),
        segments: Vec::with_capacity(rows.len() * len),
    };
    let mut picked: Vec<u32> = Vec::new();
    let mut targets: Vec<u32> = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let pad = len - row.tokens.len();
        batch.tokens.extend_from_slice(&row.tokens);
        batch.tokens.extend(std::iter::repeat_n(0, pad));
        batch.positions.extend_from_slice(&row.positions);
        batch.positions.extend(std::iter::repeat_n(0, pad));
        batch.segments.extend_from_slice(&row.segments);
        // Padding gets segments of its own, so it attends only to itself.
        batch.segments.extend((0..pad as u32).map(|i| u32::MAX - i));
        for i in 0..row.tokens.len().saturating_sub(1) {
            if row.segments[i] == row.segments[i + 1] && row.trained[i + 1] {
                picked.push((r * len + i) as u32);
                targets.push(row.tokens[i + 1]);
            }
        }
    }
    let hidden = model.forward_train(&batch, adapter, dropout)?;
    let count = picked.len();
    let device = model.device();
    let compute = || -> candle_core::Result<Tensor> {
        let hidden = hidden.reshape((rows.len() * len, ()))?;
        let picked = Tensor::new(picked.as_slice(), device)?;
        // Only positions that carry loss go through the (large) vocabulary projection.
        let chosen = hidden.index_select(&picked, 0)?;
        let logits = model
            .project_to_vocab(&chosen)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        crate::model::fused::cross_entropy_sum(&logits, &targets)
    };
    Ok((compute().map_err(candle)?, count))
}

struct Param {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// A LoRA fine-tune of one model on one dataset.
pub struct Trainer<'m> {
    model: &'m Llama,
    config: TrainConfig,
    adapter: LoraAdapter,
    params: Vec<Param>,
    /// Parameter values at the best evaluation so far.
    best: Option<Vec<Tensor>>,
    train: Vec<PackedRow>,
    eval: Vec<PackedRow>,
    data_hash: String,
    pub state: TrainState,
    pub packing: PackingReport,
}

fn candle(e: candle_core::Error) -> LlmError {
    LlmError::Compute(e.to_string())
}

impl<'m> Trainer<'m> {
    /// A fresh run. Fails before any work on bad hyperparameters, a model that cannot train,
    /// or data with nothing to learn.
    pub fn new(
        model: &'m Llama,
        config: TrainConfig,
        train: &[Example],
        eval: &[Example],
    ) -> Result<Self, LlmError> {
        config.validate(model.config().context_length)?;
        if model.weights() != crate::model::Weights::Dequantized {
            return Err(LlmError::Unsupported(
                "training needs the model loaded with dequantized weights (Weights::Dequantized): quantized matmuls have no gradient".into(),
            ));
        }
        let (train_rows, packing) = pack(train, config.seq_len, config.packing);
        if train_rows.is_empty() {
            return Err(LlmError::BadInput(format!(
                "no usable training examples: {} given, {} have no token to learn",
                packing.examples, packing.empty
            )));
        }
        let (eval_rows, _) = pack(eval, config.seq_len, config.packing);
        let mut adapter =
            LoraAdapter::init(config.lora(), model.config(), config.seed, model.device())?;
        let mut params = Vec::new();
        for (layer, pairs) in adapter.layers.iter_mut().enumerate() {
            for (target, pair) in Target::ALL.iter().zip(pairs.iter_mut()) {
                let Some(pair) = pair else { continue };
                for (which, tensor) in [("A", &mut pair.a_t), ("B", &mut pair.b_t)] {
                    let var = Var::from_tensor(tensor).map_err(candle)?;
                    *tensor = var.as_tensor().clone();
                    let zeros = tensor.zeros_like().map_err(candle)?;
                    params.push(Param {
                        name: format!("{layer}.{}.{which}", target.peft_name()),
                        var,
                        m: zeros.clone(),
                        v: zeros,
                    });
                }
            }
        }
        let mut hasher = blake3::Hasher::new();
        for (split, rows) in [("train", &train_rows), ("eval", &eval_rows)] {
            hasher.update(split.as_bytes());
            for row in rows.iter() {
                for (&t, &m) in row.tokens.iter().zip(&row.trained) {
                    hasher.update(&t.to_le_bytes());
                    hasher.update(&[m as u8]);
                }
                hasher.update(&[0xff; 5]);
            }
        }
        let state = TrainState {
            dropout_state: config.seed ^ 0x5eed_d80f,
            ..Default::default()
        };
        Ok(Self {
            model,
            config,
            adapter,
            params,
            best: None,
            train: train_rows,
            eval: eval_rows,
            data_hash: hasher.finalize().to_hex().to_string(),
            state,
            packing,
        })
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Optimizer steps the whole run takes.
    pub fn total_steps(&self) -> u64 {
        if let Some(steps) = self.config.max_steps {
            return steps;
        }
        let per_step = (self.config.micro_batch * self.config.grad_accum) as f64;
        ((self.train.len() as f64 * self.config.epochs) / per_step)
            .ceil()
            .max(1.0) as u64
    }

    /// The rows of epoch `epoch`, in that epoch's seeded order.
    fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        let mut state = self.config.seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for i in (1..order.len()).rev() {
            let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        order
    }

    fn batch_loss(
        &self,
        rows: &[&PackedRow],
        dropout: Option<&Dropout>,
        adapter: &LoraAdapter,
    ) -> Result<(Tensor, usize), LlmError> {
        rows_loss(self.model, rows, dropout, adapter)
    }

    /// One optimizer step over `micro_batch × grad_accum` rows.
    fn step(&mut self) -> Result<(f64, f64, f64, usize), LlmError> {
        let per_step = self.config.micro_batch * self.config.grad_accum;
        let mut rows: Vec<usize> = Vec::with_capacity(per_step);
        let mut order = self.epoch_order(self.state.epoch);
        while rows.len() < per_step {
            if self.state.cursor >= order.len() {
                self.state.epoch += 1;
                self.state.cursor = 0;
                order = self.epoch_order(self.state.epoch);
            }
            rows.push(order[self.state.cursor]);
            self.state.cursor += 1;
        }
        let loss_tokens: usize = rows
            .iter()
            .map(|&r| {
                let row = &self.train[r];
                (1..row.tokens.len())
                    .filter(|&i| row.segments[i] == row.segments[i - 1] && row.trained[i])
                    .count()
            })
            .sum();
        let dropout = Dropout::new(self.config.dropout, self.state.dropout_state);
        let mut grads: Vec<Option<Tensor>> = vec![None; self.params.len()];
        let mut loss_sum = 0.0f64;
        let mut tokens = 0usize;
        for micro in rows.chunks(self.config.micro_batch) {
            let micro: Vec<&PackedRow> = micro.iter().map(|&r| &self.train[r]).collect();
            tokens += micro.iter().map(|r| r.tokens.len()).sum::<usize>();
            let (loss, _) = self.batch_loss(&micro, Some(&dropout), &self.adapter)?;
            loss_sum += loss.to_scalar::<f32>().map_err(candle)? as f64;
            let scaled = (loss / loss_tokens.max(1) as f64).map_err(candle)?;
            let store = scaled.backward().map_err(candle)?;
            for (slot, param) in grads.iter_mut().zip(&self.params) {
                let Some(g) = store.get(param.var.as_tensor()) else {
                    continue;
                };
                // candle's gradients can still carry the forward graph (a product with a
                // tracked operand is tracked); detached, the optimizer state holds only numbers.
                let g = g.detach();
                *slot = Some(match slot.take() {
                    None => g,
                    Some(sum) => (sum + g).map_err(candle)?,
                });
            }
        }
        self.state.dropout_state = dropout.state();
        let grads: Vec<Tensor> = grads
            .into_iter()
            .zip(&self.params)
            .map(|(g, p)| g.map_or_else(|| p.var.as_tensor().zeros_like(), Ok))
            .collect::<candle_core::Result<_>>()
            .map_err(candle)?;
        let mut norm_sq = 0.0f64;
        for g in &grads {
            norm_sq += g
                .sqr()
                .and_then(|s| s.sum_all())
                .and_then(|s| s.to_scalar::<f32>())
                .map_err(candle)? as f64;
        }
        let grad_norm = norm_sq.sqrt();
        let clip = if self.config.max_grad_norm > 0.0 && grad_norm > self.config.max_grad_norm {
            self.config.max_grad_norm / (grad_norm + 1e-6)
        } else {
            1.0
        };
        let lr = self
            .config
            .learning_rate_at(self.state.step, self.total_steps());
        self.adam_update(&grads, clip, lr)?;
        self.state.step += 1;
        self.state.tokens_seen += tokens as u64;
        let loss = loss_sum / loss_tokens.max(1) as f64;
        self.state.last_loss = Some(loss);
        Ok((loss, lr, grad_norm, tokens))
    }

    fn adam_update(&mut self, grads: &[Tensor], clip: f64, lr: f64) -> Result<(), LlmError> {
        let c = &self.config;
        let t = (self.state.step + 1) as i32;
        let correction1 = 1.0 - c.beta1.powi(t);
        let correction2 = 1.0 - c.beta2.powi(t);
        for (param, grad) in self.params.iter_mut().zip(grads) {
            let mut update = || -> candle_core::Result<()> {
                let g = (grad * clip)?;
                param.m = ((&param.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
                param.v = ((&param.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                let m_hat = (&param.m / correction1)?;
                let v_hat = (&param.v / correction2)?;
                let step = (m_hat / (v_hat.sqrt()? + c.adam_eps)?)?;
                let theta = param.var.as_tensor();
                let decayed = (theta * (1.0 - lr * c.weight_decay))?;
                param.var.set(&(decayed - (step * lr)?)?)
            };
            update().map_err(candle)?;
        }
        Ok(())
    }

    /// Mean next-token loss and perplexity over the held-out rows (`None` without any).
    pub fn evaluate(&self) -> Result<Option<EvalPoint>, LlmError> {
        self.evaluate_adapter(&self.adapter_snapshot(false)?)
    }

    /// As [`Trainer::evaluate`], for any adapter of this model (a fresh one measures the base).
    pub fn evaluate_adapter(&self, adapter: &LoraAdapter) -> Result<Option<EvalPoint>, LlmError> {
        if self.eval.is_empty() {
            return Ok(None);
        }
        let mut sum = 0.0f64;
        let mut count = 0usize;
        for chunk in self.eval.chunks(self.config.micro_batch) {
            let rows: Vec<&PackedRow> = chunk.iter().collect();
            let (loss, n) = self.batch_loss(&rows, None, adapter)?;
            sum += loss.to_scalar::<f32>().map_err(candle)? as f64;
            count += n;
        }
        let loss = sum / count.max(1) as f64;
        Ok(Some(EvalPoint {
            step: self.state.step,
            loss,
            perplexity: loss.exp(),
        }))
    }

    /// The adapter as it is now, detached from training (copied, when `copy`, so later steps
    /// do not change it).
    fn adapter_snapshot(&self, copy: bool) -> Result<LoraAdapter, LlmError> {
        let mut adapter = self.adapter.clone();
        for pair in adapter.layers.iter_mut().flatten().flatten() {
            for tensor in [&mut pair.a_t, &mut pair.b_t] {
                *tensor = if copy {
                    tensor.copy().map_err(candle)?
                } else {
                    tensor.detach()
                };
            }
        }
        Ok(adapter)
    }

    /// The trained adapter: the parameters of the best evaluation when there was a held-out
    /// set, else the latest ones.
    pub fn adapter(&self) -> Result<LoraAdapter, LlmError> {
        let mut adapter = self.adapter_snapshot(true)?;
        if let Some(best) = &self.best {
            let mut values = best.iter();
            for pair in adapter.layers.iter_mut().flatten().flatten() {
                for tensor in [&mut pair.a_t, &mut pair.b_t] {
                    *tensor = values.next().expect("one value per parameter").clone();
                }
            }
        }
        Ok(adapter)
    }

    fn record_eval(&mut self, point: EvalPoint) -> Result<(), LlmError> {
        self.state.evals.push(point);
        let improved = self
            .state
            .best_eval_loss
            .is_none_or(|best| point.loss < best);
        if improved {
            self.state.best_eval_loss = Some(point.loss);
            self.state.best_step = Some(point.step);
            self.state.evals_without_improvement = 0;
            self.best = Some(
                self.params
                    .iter()
                    .map(|p| p.var.as_tensor().copy())
                    .collect::<candle_core::Result<_>>()
                    .map_err(candle)?,
            );
        } else {
            self.state.evals_without_improvement += 1;
        }
        Ok(())
    }

    /// Trains until done, early stopping, or `on_event` returns `false`. With `checkpoints`,
    /// writes a checkpoint every `checkpoint_every` steps and when stopping.
    pub fn run(
        &mut self,
        checkpoints: Option<&Path>,
        mut on_event: impl FnMut(&TrainEvent) -> bool,
    ) -> Result<RunOutcome, LlmError> {
        if let Some(finish) = self.state.finished {
            return Ok(RunOutcome::Finished(finish));
        }
        let total = self.total_steps();
        let started = Instant::now();
        let first_step = self.state.step;
        let mut keep_going = true;
        while self.state.step < total && keep_going {
            let (loss, learning_rate, grad_norm, _) = self.step()?;
            let step = self.state.step;
            let elapsed = started.elapsed().as_secs_f64().max(1e-9);
            let done_here = (step - first_step) as f64;
            let tokens_here: f64 = self.tokens_per_step() * done_here;
            keep_going &= on_event(&TrainEvent::Step {
                step,
                total_steps: total,
                epoch: self.state.epoch as f64
                    + self.state.cursor as f64 / self.train.len().max(1) as f64,
                loss,
                learning_rate,
                grad_norm,
                tokens_per_second: tokens_here / elapsed,
                eta_seconds: elapsed / done_here * (total - step) as f64,
            });
            let eval_due =
                self.config.eval_every > 0 && step.is_multiple_of(self.config.eval_every);
            if (eval_due || step == total)
                && let Some(point) = self.evaluate()?
            {
                self.record_eval(point)?;
                keep_going &= on_event(&TrainEvent::Eval {
                    step,
                    loss: point.loss,
                    perplexity: point.perplexity,
                });
                let patience = self.config.early_stopping_patience;
                if patience > 0 && self.state.evals_without_improvement >= patience {
                    self.state.finished = Some(Finish::EarlyStopped);
                    break;
                }
            }
            if step == total {
                self.state.finished = Some(Finish::Completed);
            }
            let checkpoint_due = self.config.checkpoint_every > 0
                && step.is_multiple_of(self.config.checkpoint_every);
            if let Some(dir) = checkpoints
                && (checkpoint_due || !keep_going || self.state.finished.is_some())
            {
                self.save_checkpoint(dir)?;
                keep_going &= on_event(&TrainEvent::Checkpoint { step });
            }
        }
        if self.state.step >= total && self.state.finished.is_none() {
            self.state.finished = Some(Finish::Completed);
        }
        Ok(match self.state.finished {
            Some(finish) => RunOutcome::Finished(finish),
            None => RunOutcome::Stopped,
        })
    }

    fn tokens_per_step(&self) -> f64 {
        let mean_row = self.train.iter().map(|r| r.tokens.len()).sum::<usize>() as f64
            / self.train.len() as f64;
        mean_row * (self.config.micro_batch * self.config.grad_accum) as f64
    }

    /// Writes a checkpoint under `dir` (`step-N/` then the `LATEST` pointer, each made whole
    /// before it becomes visible), and removes older ones.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<(), LlmError> {
        let name = format!("step-{:08}", self.state.step);
        let target = dir.join(&name);
        let staging = dir.join(format!(".{name}.partial"));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(crate::io_error(&staging))?;
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            tensors.push((format!("param.{}", p.name), p.var.as_tensor().clone()));
            tensors.push((format!("adam_m.{}", p.name), p.m.clone()));
            tensors.push((format!("adam_v.{}", p.name), p.v.clone()));
            if let Some(best) = &self.best {
                tensors.push((format!("best.{}", p.name), best[i].clone()));
            }
        }
        let weights = staging.join("trainer.safetensors");
        candle_core::safetensors::save(
            &tensors
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
            &weights,
        )
        .map_err(|e| LlmError::Io {
            path: weights.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let meta = CheckpointMeta {
            config_hash: self.config.hash(),
            data_hash: self.data_hash.clone(),
            state: self.state.clone(),
        };
        let meta_path = staging.join("state.json");
        std::fs::write(
            &meta_path,
            serde_json::to_vec_pretty(&meta).expect("serialisable"),
        )
        .map_err(crate::io_error(&meta_path))?;
        sync_dir_files(&staging)?;
        let _ = std::fs::remove_dir_all(&target);
        std::fs::rename(&staging, &target).map_err(crate::io_error(&target))?;
        let pointer = dir.join("LATEST");
        let pointer_tmp = dir.join(".LATEST.partial");
        write_synced(&pointer_tmp, name.as_bytes())?;
        std::fs::rename(&pointer_tmp, &pointer).map_err(crate::io_error(&pointer))?;
        sync_dir(dir)?;
        // Older checkpoints are no longer needed once LATEST names the new one.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().to_string();
                if file.starts_with("step-") && file != name {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(())
    }

    /// The checkpoint `LATEST` names under `dir`, if any.
    pub fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
        let name = std::fs::read_to_string(dir.join("LATEST")).ok()?;
        let path = dir.join(name.trim());
        path.join("state.json").exists().then_some(path)
    }

    /// Continues from the latest checkpoint under `dir` (a fresh run when there is none). The
    /// checkpoint must come from the same hyperparameters and data.
    pub fn resume(&mut self, dir: &Path) -> Result<bool, LlmError> {
        let Some(path) = Self::latest_checkpoint(dir) else {
            return Ok(false);
        };
        let meta_path = path.join("state.json");
        let text = std::fs::read_to_string(&meta_path).map_err(crate::io_error(&meta_path))?;
        let meta: CheckpointMeta = serde_json::from_str(&text)
            .map_err(|e| LlmError::BadInput(format!("{}: {e}", meta_path.display())))?;
        if meta.config_hash != self.config.hash() {
            return Err(LlmError::BadInput(format!(
                "checkpoint {} was made with other hyperparameters; start a new run or use the original ones",
                path.display()
            )));
        }
        if meta.data_hash != self.data_hash {
            return Err(LlmError::BadInput(format!(
                "checkpoint {} was made on other training data",
                path.display()
            )));
        }
        let weights = path.join("trainer.safetensors");
        let tensors = candle_core::safetensors::load(&weights, self.model.device())
            .map_err(|e| LlmError::BadModel(format!("{}: {e}", weights.display())))?;
        let get = |key: String| {
            tensors.get(&key).cloned().ok_or_else(|| {
                LlmError::BadModel(format!("{}: tensor {key} is missing", weights.display()))
            })
        };
        let mut best = Vec::new();
        for p in self.params.iter_mut() {
            p.var
                .set(&get(format!("param.{}", p.name))?)
                .map_err(candle)?;
            p.m = get(format!("adam_m.{}", p.name))?;
            p.v = get(format!("adam_v.{}", p.name))?;
            if meta.state.best_step.is_some() {
                best.push(get(format!("best.{}", p.name))?);
            }
        }
        self.best = (!best.is_empty()).then_some(best);
        self.state = meta.state;
        Ok(true)
    }
}

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    config_hash: String,
    data_hash: String,
    state: TrainState,
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), LlmError> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(crate::io_error(path))?;
    file.write_all(bytes).map_err(crate::io_error(path))?;
    file.sync_all().map_err(crate::io_error(path))
}

fn sync_dir_files(dir: &Path) -> Result<(), LlmError> {
    for entry in std::fs::read_dir(dir).map_err(crate::io_error(dir))? {
        let path = entry.map_err(crate::io_error(dir))?.path();
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(crate::io_error(&path))?;
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), LlmError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(crate::io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(len: usize, trained_from: usize) -> Example {
        Example {
            tokens: (0..len as u32).collect(),
            trained: (0..len).map(|i| i >= trained_from).collect(),
        }
    }

    #[test]
    fn packing_fills_rows_first_fit_and_keeps_examples_apart() {
        let examples = [example(6, 2), example(5, 0), example(3, 1), example(9, 0)];
        let (rows, report) = pack(&examples, 8, true);
        // 6 → row 0; 5 → row 1; 3 → row 1 (5+3=8)... first fit: row 0 has 2 left, row 1 has 3.
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].segments, [0, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(rows[1].positions, [0, 1, 2, 3, 4, 0, 1, 2]);
        assert_eq!(report.truncated, 1, "the 9-token example is cut to 8");
        let (unpacked, _) = pack(&examples, 8, false);
        assert_eq!(unpacked.len(), 4);
        let (_, report) = pack(&[example(4, 9)], 8, true);
        assert_eq!((report.rows, report.empty), (0, 1), "nothing to learn");
    }

    #[test]
    fn schedules_warm_up_then_decay() {
        let config = TrainConfig {
            learning_rate: 1.0,
            warmup_steps: 4,
            schedule: Schedule::Cosine,
            ..Default::default()
        };
        let lrs: Vec<f64> = (0..12).map(|s| config.learning_rate_at(s, 12)).collect();
        assert_eq!(lrs[0], 0.25);
        assert_eq!(lrs[3], 1.0);
        assert!(lrs.windows(2).skip(3).all(|w| w[1] <= w[0]), "{lrs:?}");
        assert!(lrs[11] < 1e-9, "cosine ends at zero: {lrs:?}");
        let linear = TrainConfig {
            schedule: Schedule::Linear,
            ..config.clone()
        };
        assert!((linear.learning_rate_at(7, 12) - 0.5).abs() < 1e-9);
        let constant = TrainConfig {
            schedule: Schedule::Constant,
            ..config
        };
        assert_eq!(constant.learning_rate_at(10, 12), 1.0);
    }

    #[test]
    fn hyperparameters_out_of_range_are_named() {
        let check = |config: TrainConfig, field: &str| {
            let err = config.validate(256).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        };
        check(
            TrainConfig {
                learning_rate: 0.0,
                ..Default::default()
            },
            "learning_rate",
        );
        check(
            TrainConfig {
                seq_len: 100_000,
                ..Default::default()
            },
            "seq_len",
        );
        check(
            TrainConfig {
                rank: 0,
                ..Default::default()
            },
            "rank",
        );
        check(
            TrainConfig {
                targets: vec!["embed_tokens".into()],
                ..Default::default()
            },
            "embed_tokens",
        );
        check(
            TrainConfig {
                grad_accum: 0,
                ..Default::default()
            },
            "grad_accum",
        );
    }
}
