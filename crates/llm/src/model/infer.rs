//! Inference: the forward pass of several sequences at once, over plain f32 buffers.
//!
//! Rows of every sequence in the step are stacked (`total × width`) so each base matrix is
//! read once per step; attention runs per (row, head) against the row's own cache; a row
//! whose sequence has an adapter gets that adapter's low-rank delta, computed row by row
//! straight from the adapter's matrices (the BGMV idea of Punica and S-LoRA: no grouping,
//! no gathering, adapters of any rank and targets mix in one step).
//!
//! Invariant: every row is computed by the same arithmetic whatever else is in the step (the
//! kernels' products are batch-invariant, and norms, RoPE, attention and deltas are per row),
//! so a sequence's logits are bit-identical alone or batched, and on any thread count.

use candle_core::{Storage, Tensor};
use openledger_kernels::{Activations, Pool, f16, matmul, vector};

use super::{KvCache, KvRows, LayerKv, Linear, Llama, Step, candle};
use crate::LlmError;
use crate::lora::{LoraAdapter, Target};

thread_local! {
    /// Attention scores of one (row, head), reused across tasks on each thread.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where a sequence's rows sit in the step.
struct Seq {
    start: usize,
    len: usize,
    /// Positions already in its cache before this step.
    past: usize,
}

impl Llama {
    /// Runs the next tokens of several sequences in one pass and returns each one's last
    /// logits. The base model's matmuls see the rows of every sequence together (one pass over
    /// the weights for the whole batch); attention runs per sequence against its own cache; each
    /// row whose sequence has an adapter gets that adapter's delta. A sequence's results are
    /// the same as running it alone.
    pub fn forward_batch(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>, LlmError> {
        let c = &self.config;
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let mut tokens = Vec::new();
        let mut seqs = Vec::with_capacity(steps.len());
        let mut row_adapter: Vec<Option<&LoraAdapter>> = Vec::new();
        for step in steps.iter_mut() {
            let cache = &mut *step.cache;
            if step.tokens.is_empty() {
                return Err(LlmError::BadInput("no tokens to run".into()));
            }
            if cache.len + step.tokens.len() > c.context_length {
                return Err(LlmError::ContextFull {
                    needed: cache.len + step.tokens.len(),
                    context: c.context_length,
                });
            }
            if let Some(&bad) = step.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                return Err(LlmError::BadInput(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    c.vocab_size
                )));
            }
            let fresh = self.new_cache();
            let same_kind =
                |a: &KvRows, b: &KvRows| std::mem::discriminant(a) == std::mem::discriminant(b);
            if cache.layers.len() != c.num_layers
                || !same_kind(&cache.layers[0].k, &fresh.layers[0].k)
            {
                if cache.len > 0 {
                    return Err(LlmError::BadInput(
                        "this KV cache was made by another model; start the sequence with the model's new_cache()".into(),
                    ));
                }
                *cache = fresh;
            }
            seqs.push(Seq {
                start: tokens.len(),
                len: step.tokens.len(),
                past: cache.len,
            });
            tokens.extend_from_slice(step.tokens);
            row_adapter.extend(std::iter::repeat_n(step.adapter, step.tokens.len()));
        }
        let pool = Pool::global();
        let total = tokens.len();
        let (hidden, inter) = (c.hidden_size, c.intermediate_size);
        let kv_width = c.num_kv_heads * c.head_dim;
        let eps = c.rms_norm_eps as f32;

        let mut x = self.embed(&tokens)?;
        let mut h = vec![0f32; total * hidden];
        let mut q = vec![0f32; total * hidden];
        let mut k = vec![0f32; total * kv_width];
        let mut v = vec![0f32; total * kv_width];
        let mut attended = vec![0f32; total * hidden];
        let mut projected = vec![0f32; total * hidden];
        let mut gate = vec![0f32; total * inter];
        let mut up = vec![0f32; total * inter];
        let mut acts = Activations::default();
        let lora = Lora::new(&row_adapter);

        for (index, layer) in self.layers.iter().enumerate() {
            rms_norm(pool, &x, &layer.attn_norm_v, eps, &mut h);
            prepare(&[&layer.wq, &layer.wk, &layer.wv], &h, hidden, &mut acts);
            // Base products of one input as one job, then each one's adapter deltas.
            let run = |linears: &mut [(&Linear, Target, &mut [f32])],
                       input: &[f32],
                       acts: &Activations|
             -> Result<(), LlmError> {
                apply_all(linears, input, acts, pool)?;
                for (_, target, out) in linears.iter_mut() {
                    lora.add(index, *target, input, out, pool)?;
                }
                Ok(())
            };
            run(
                &mut [
                    (&layer.wq, Target::Q, &mut q),
                    (&layer.wk, Target::K, &mut k),
                    (&layer.wv, Target::V, &mut v),
                ],
                &h,
                &acts,
            )?;
            for seq in &seqs {
                for row in seq.start..seq.start + seq.len {
                    let position = seq.past + row - seq.start;
                    self.rope(&mut q[row * hidden..(row + 1) * hidden], position);
                    self.rope(&mut k[row * kv_width..(row + 1) * kv_width], position);
                }
            }
            for (step, seq) in steps.iter_mut().zip(&seqs) {
                let kv = &mut step.cache.layers[index];
                let rows = seq.start * kv_width..(seq.start + seq.len) * kv_width;
                kv.k.push(&k[rows.clone()], kv_width);
                kv.v.push(&v[rows], kv_width);
            }
            let caches: Vec<&LayerKv> = steps.iter().map(|s| &s.cache.layers[index]).collect();
            self.attend_cached(pool, &seqs, &caches, &q, &mut attended);

            prepare(&[&layer.wo], &attended, hidden, &mut acts);
            run(
                &mut [(&layer.wo, Target::O, &mut projected)],
                &attended,
                &acts,
            )?;
            add(&mut x, &projected);

            rms_norm(pool, &x, &layer.ffn_norm_v, eps, &mut h);
            prepare(&[&layer.w_gate, &layer.w_up], &h, hidden, &mut acts);
            run(
                &mut [
                    (&layer.w_gate, Target::Gate, &mut gate),
                    (&layer.w_up, Target::Up, &mut up),
                ],
                &h,
                &acts,
            )?;
            swiglu(pool, &mut gate, &up, inter);
            prepare(&[&layer.w_down], &gate, inter, &mut acts);
            run(
                &mut [(&layer.w_down, Target::Down, &mut projected)],
                &gate,
                &acts,
            )?;
            add(&mut x, &projected);
        }
        for (step, seq) in steps.iter_mut().zip(&seqs) {
            step.cache.len += seq.len;
        }

        let mut last = Vec::with_capacity(seqs.len() * hidden);
        for seq in &seqs {
            let row = seq.start + seq.len - 1;
            last.extend_from_slice(&x[row * hidden..(row + 1) * hidden]);
        }
        let mut normed = vec![0f32; last.len()];
        rms_norm(pool, &last, &self.output_norm_v, eps, &mut normed);
        prepare(&[&self.output], &normed, hidden, &mut acts);
        let mut logits = vec![0f32; seqs.len() * c.vocab_size];
        self.output.apply(&normed, &acts, &mut logits, pool)?;
        Ok(logits
            .chunks_exact(c.vocab_size)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// The embedding rows of `tokens`, stacked.
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, LlmError> {
        let hidden = self.config.hidden_size;
        match (&self.embeddings, &self.output) {
            (Some(table), _) => {
                let ids = Tensor::new(tokens, &self.device).map_err(candle)?;
                table
                    .embedding(&ids)
                    .and_then(|e| e.flatten_all())
                    .and_then(|e| e.to_vec1())
                    .map_err(candle)
            }
            (None, Linear::Kernel(table)) => {
                let mut x = vec![0f32; tokens.len() * hidden];
                for (&t, row) in tokens.iter().zip(x.chunks_exact_mut(hidden)) {
                    table.dequantize_row(t as usize, row);
                }
                Ok(x)
            }
            (None, Linear::Candle(_)) => {
                unreachable!("embeddings are kept unless tied to a kernel matrix")
            }
        }
    }

    /// Interleaved RoPE on one row of heads at `position`: pairs `(2i, 2i+1)` turn by angle `i`.
    fn rope(&self, row: &mut [f32], position: usize) {
        let half = self.config.head_dim / 2;
        let cos = &self.cos_v[position * half..(position + 1) * half];
        let sin = &self.sin_v[position * half..(position + 1) * half];
        for head in row.chunks_exact_mut(self.config.head_dim) {
            for i in 0..half {
                let (a, b) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = a * cos[i] - b * sin[i];
                head[2 * i + 1] = a * sin[i] + b * cos[i];
            }
        }
    }

    /// Causal attention of every row's query heads over its sequence's cache (which already
    /// holds this step's keys and values), one task per (row, head). With a half-precision
    /// cache, as in llama.cpp, the query and the softmax weights are rounded to half precision
    /// to meet it. Softmax sums in f64, as llama.cpp does.
    fn attend_cached(
        &self,
        pool: &Pool,
        seqs: &[Seq],
        caches: &[&LayerKv],
        q: &[f32],
        out: &mut [f32],
    ) {
        let c = &self.config;
        let (d, heads) = (c.head_dim, c.num_heads);
        let kv_width = c.num_kv_heads * d;
        let repeat = heads / c.num_kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut row_seq = Vec::with_capacity(out.len() / (heads * d));
        for (s, seq) in seqs.iter().enumerate() {
            row_seq.extend(std::iter::repeat_n(s, seq.len));
        }
        pool.for_chunks_mut(out, d, &|task, out| {
            let (row, head) = (task / heads, task % heads);
            let seq = &seqs[row_seq[row]];
            let kv = caches[row_seq[row]];
            let visible = seq.past + row - seq.start + 1;
            let query = &q[row * heads * d + head * d..][..d];
            let offset = (head / repeat) * d;
            let at = |j: usize| j * kv_width + offset..j * kv_width + offset + d;
            match (&kv.k, &kv.v) {
                (KvRows::Half(k), KvRows::Half(v)) => {
                    let mut rounded = vec![f16::ZERO; d];
                    vector::to_f16(query, &mut rounded);
                    SCORES.with_borrow_mut(|scores| {
                        vector::attend_f16(
                            &rounded, k, v, kv_width, offset, visible, scale, scores, out,
                        )
                    });
                }
                (KvRows::Full(k), KvRows::Full(v)) => {
                    let mut weights: Vec<f32> = (0..visible)
                        .map(|j| vector::dot(query, &k[at(j)]) * scale)
                        .collect();
                    let max = weights.iter().fold(f32::NEG_INFINITY, |m, &w| m.max(w));
                    let mut sum = 0f64;
                    for w in weights.iter_mut() {
                        *w = (*w - max).exp();
                        sum += f64::from(*w);
                    }
                    let inv = (1.0 / sum) as f32;
                    out.fill(0.0);
                    for (j, &w) in weights.iter().enumerate() {
                        vector::axpy(w * inv, &v[at(j)], out);
                    }
                }
                _ => unreachable!("a cache's keys and values have one precision"),
            }
        });
    }
}

impl Linear {
    /// `out = input · Wᵀ` for `input` (rows × in); `acts` holds `input` quantized when this is
    /// a kernel matrix (see [`prepare`]).
    fn apply(
        &self,
        input: &[f32],
        acts: &Activations,
        out: &mut [f32],
        pool: &Pool,
    ) -> Result<(), LlmError> {
        match self {
            Linear::Kernel(w) => {
                matmul(w, acts, out, pool);
                Ok(())
            }
            Linear::Candle(w) => {
                use candle_core::Module;
                let (_, cols) = w_shape(w)?;
                let x = Tensor::from_slice(
                    input,
                    (input.len() / cols, cols),
                    &candle_core::Device::Cpu,
                )
                .map_err(candle)?;
                let y = w
                    .forward(&x)
                    .and_then(|y| y.to_dtype(candle_core::DType::F32))
                    .and_then(|y| y.flatten_all())
                    .and_then(|y| y.to_vec1::<f32>())
                    .map_err(candle)?;
                out.copy_from_slice(&y);
                Ok(())
            }
        }
    }
}

/// `out = input · Wᵀ` for each (W, out): the kernel matrices among them as one pool job.
fn apply_all(
    linears: &mut [(&Linear, Target, &mut [f32])],
    input: &[f32],
    acts: &Activations,
    pool: &Pool,
) -> Result<(), LlmError> {
    let mut kernel: Vec<(&openledger_kernels::QMatrix, &mut [f32])> = Vec::new();
    for (linear, _, out) in linears.iter_mut() {
        match linear {
            Linear::Kernel(w) => kernel.push((w, &mut **out)),
            Linear::Candle(_) => linear.apply(input, acts, out, pool)?,
        }
    }
    openledger_kernels::matmul_many(&mut kernel, acts, pool);
    Ok(())
}

/// `(out, in)` of a candle linear layer.
fn w_shape(w: &candle_core::quantized::QMatMul) -> Result<(usize, usize), LlmError> {
    use candle_core::quantized::QMatMul;
    let dims = match w {
        QMatMul::QTensor(q) => q.shape().dims().to_vec(),
        QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims().to_vec(),
    };
    match dims[..] {
        [rows, cols] => Ok((rows, cols)),
        _ => Err(LlmError::BadModel(format!(
            "a linear layer of shape {dims:?}"
        ))),
    }
}

/// Quantizes `x` into `acts` once for all the kernel matrices that read it.
fn prepare(linears: &[&Linear], x: &[f32], cols: usize, acts: &mut Activations) {
    if linears.iter().any(|l| matches!(l, Linear::Kernel(_))) {
        acts.quantize(x, cols);
    }
}

/// Each row's adapter, and the adapters' matrices borrowed for one (layer, target).
struct Lora<'a> {
    rows: &'a [Option<&'a LoraAdapter>],
    any: bool,
}

impl<'a> Lora<'a> {
    fn new(rows: &'a [Option<&'a LoraAdapter>]) -> Self {
        Self {
            rows,
            any: rows.iter().any(Option::is_some),
        }
    }

    /// `out[row] += s · (input[row] · Aᵀ) · Bᵀ` for each row whose adapter has a pair on
    /// `target` of `layer`.
    fn add(
        &self,
        layer: usize,
        target: Target,
        input: &[f32],
        out: &mut [f32],
        pool: &Pool,
    ) -> Result<(), LlmError> {
        if !self.any {
            return Ok(());
        }
        // Borrow each distinct adapter's matrices once (candle keeps tensor storage behind a
        // lock; holding the read guards lets the tasks read the plain slices).
        let mut distinct: Vec<&LoraAdapter> = Vec::new();
        for adapter in self.rows.iter().flatten() {
            if adapter.touches(layer, target)
                && !distinct.iter().any(|d| std::ptr::eq(*d, *adapter))
            {
                distinct.push(adapter);
            }
        }
        if distinct.is_empty() {
            return Ok(());
        }
        let guards: Vec<_> = distinct
            .iter()
            .map(|adapter| {
                let pair = adapter.layers[layer][target as usize]
                    .as_ref()
                    .expect("touches() said so");
                let (a, a_layout) = pair.a_t.storage_and_layout();
                let (b, b_layout) = pair.b_t.storage_and_layout();
                let (Some((a_start, _)), Some((b_start, _))) =
                    (a_layout.contiguous_offsets(), b_layout.contiguous_offsets())
                else {
                    return Err(LlmError::Compute(
                        "adapter matrices are not contiguous".into(),
                    ));
                };
                Ok((a, b, a_start, b_start))
            })
            .collect::<Result<_, _>>()?;
        let mut slices: Vec<(&[f32], &[f32], usize, f32)> = Vec::with_capacity(guards.len());
        for ((a, b, a_start, b_start), adapter) in guards.iter().zip(&distinct) {
            let (Storage::Cpu(a), Storage::Cpu(b)) = (&**a, &**b) else {
                return Err(LlmError::Compute(
                    "adapter matrices are not in main memory".into(),
                ));
            };
            let (a, b) = (
                a.as_slice::<f32>().map_err(candle)?,
                b.as_slice::<f32>().map_err(candle)?,
            );
            let r = adapter.config.r;
            let width = input.len() / self.rows.len();
            let out_width = out.len() / self.rows.len();
            slices.push((
                &a[*a_start..*a_start + width * r],
                &b[*b_start..*b_start + r * out_width],
                r,
                adapter.scale() as f32,
            ));
        }
        let width = input.len() / self.rows.len();
        let out_width = out.len() / self.rows.len();
        pool.for_chunks_mut(out, out_width, &|row, y| {
            let Some(adapter) = self.rows[row] else {
                return;
            };
            let Some(slot) = distinct.iter().position(|d| std::ptr::eq(*d, adapter)) else {
                return;
            };
            let (a_t, b_t, r, scale) = slices[slot];
            let mut low = vec![0f32; r];
            vector::xw_add(&input[row * width..(row + 1) * width], a_t, &mut low);
            low.iter_mut().for_each(|t| *t *= scale);
            vector::xw_add(&low, b_t, y);
        });
        Ok(())
    }
}

fn rms_norm(pool: &Pool, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    let chunk = width * rows_per_task(x.len() / width);
    pool.for_chunks_mut(out, chunk, &|task, out| {
        let start = task * chunk;
        for (x, out) in x[start..start + out.len()]
            .chunks_exact(width)
            .zip(out.chunks_exact_mut(width))
        {
            // Summed in f64, as llama.cpp does.
            let mean = x.iter().map(|v| f64::from(v * v)).sum::<f64>() / width as f64;
            let inv = 1.0 / (mean as f32 + eps).sqrt();
            for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
                *o = v * inv * w;
            }
        }
    });
}

/// `gate = silu(gate) ⊙ up`.
fn swiglu(pool: &Pool, gate: &mut [f32], up: &[f32], width: usize) {
    let chunk = width * rows_per_task(gate.len() / width);
    pool.for_chunks_mut(gate, chunk, &|task, gate| {
        let up = &up[task * chunk..][..gate.len()];
        for (g, u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    });
}

/// Rows per task of the elementwise passes: one task for a decode step, a few per thread for
/// a prompt.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(8).max(1)
}

fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

impl KvRows {
    /// Appends `rows` (whole positions of `width` values), growing the storage by whole
    /// blocks of [`KV_BLOCK`] positions, so a sequence's memory is what a block allocator
    /// accounts for it.
    fn push(&mut self, rows: &[f32], width: usize) {
        fn grow<T>(cache: &mut Vec<T>, extra: usize, width: usize) {
            let needed = cache.len() + extra;
            if needed > cache.capacity() {
                let block = KV_BLOCK * width;
                cache.reserve_exact(needed.next_multiple_of(block) - cache.len());
            }
        }
        match self {
            KvRows::Half(cache) => {
                grow(cache, rows.len(), width);
                let at = cache.len();
                cache.resize(at + rows.len(), f16::ZERO);
                vector::to_f16(rows, &mut cache[at..]);
            }
            KvRows::Full(cache) => {
                grow(cache, rows.len(), width);
                cache.extend_from_slice(rows);
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            KvRows::Half(c) => c.len() * std::mem::size_of::<f16>(),
            KvRows::Full(c) => c.len() * std::mem::size_of::<f32>(),
        }
    }
}

/// Positions per block of KV storage (see [`KvRows::push`] and the serving engine's block
/// accounting).
pub const KV_BLOCK: usize = 16;

impl Llama {
    /// Bytes of KV cache one position takes (all layers, keys and values).
    pub fn kv_bytes_per_position(&self) -> usize {
        let c = &self.config;
        let element = match self.weights {
            super::Weights::Dequantized => std::mem::size_of::<f32>(),
            _ => std::mem::size_of::<f16>(),
        };
        c.num_layers * 2 * c.num_kv_heads * c.head_dim * element
    }
}

impl KvCache {
    /// Bytes the cached keys and values take.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.k.bytes() + l.v.bytes()).sum()
    }
}
