//! The training pass's non-matmul operations, each one parallel sweep with a hand-written
//! backward pass.
//!
//! Written out with candle's tensor operations, RMSNorm, RoPE, SwiGLU and masked attention
//! make a dozen full-size temporaries per layer (attention alone materialises the repeated
//! key/value heads, an (L, L) mask per head, scores, softmax and their gradients) and run on
//! one thread while the other idles. Here each is one operation over contiguous f32 rows, in
//! the token-major `(rows, features)` layout the linear layers read and write, so nothing is
//! transposed or copied between them.
//!
//! Invariant: every output element is computed by one task from the same inputs in the same
//! order, so results do not depend on the thread count (gradient sketches rely on it).

use std::ops::{Deref, Range};
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Shape, Storage};
use candle_core::{Result, Tensor, bail};
use openledger_kernels::vector::{dot, exp};
use rayon::prelude::*;

/// A contiguous f32 tensor's values, borrowed for as long as this lives (`G` is the storage's
/// read guard).
struct Values<G> {
    guard: G,
    range: Range<usize>,
}

impl Values<()> {
    fn of(t: &Tensor) -> Result<Values<impl Deref<Target = Storage> + '_>> {
        let (guard, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("a fused training operation needs contiguous inputs");
        };
        Ok(Values {
            guard,
            range: start..end,
        })
    }
}

impl<G: Deref<Target = Storage>> Values<G> {
    fn f32(&self) -> Result<&[f32]> {
        let Storage::Cpu(cpu) = &*self.guard else {
            bail!("fused training operations run on the CPU");
        };
        Ok(&cpu.as_slice::<f32>()?[self.range.clone()])
    }
}

fn slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("a fused training operation needs contiguous inputs");
    };
    Ok(&storage.as_slice::<f32>()?[start..end])
}

fn tensor(values: Vec<f32>, shape: &Shape) -> Result<Tensor> {
    Tensor::from_vec(values, shape.clone(), &Device::Cpu)
}

/// Rows of `x` per rayon task: enough work per task to pay for the hand-off.
fn rows_per_task(width: usize) -> usize {
    (16 * 1024 / width.max(1)).max(1)
}

/// `x / rms(x) · w` over the last dimension, `w` frozen (RMSNorm weights are not trained).
pub(crate) fn rms_norm(x: &Tensor, weight: &Arc<Vec<f32>>, eps: f32) -> Result<Tensor> {
    if x.dims().last() != Some(&weight.len()) {
        bail!("RMSNorm of {:?} with {} weights", x.dims(), weight.len());
    }
    x.contiguous()?.apply_op1(RmsNorm {
        weight: weight.clone(),
        eps,
    })
}

struct RmsNorm {
    weight: Arc<Vec<f32>>,
    eps: f32,
}

impl RmsNorm {
    /// `1 / sqrt(mean(x²) + eps)`, summed in f64.
    fn inverse_rms(&self, row: &[f32]) -> f32 {
        let squares: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        (1.0 / (squares / row.len() as f64 + f64::from(self.eps)).sqrt()) as f32
    }
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(storage, layout)?;
        let n = self.weight.len();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n * rows_per_task(n))
            .zip(x.par_chunks(n * rows_per_task(n)))
            .for_each(|(y, x)| {
                for (y, x) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
                    let r = self.inverse_rms(x);
                    for ((y, &x), &w) in y.iter_mut().zip(x).zip(self.weight.iter()) {
                        *y = x * r * w;
                    }
                }
            });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    /// `∂x_i = r·w_i·g_i − x_i · r³ · Σ_j w_j g_j x_j / n`.
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (x, g) = (Values::of(arg)?, Values::of(&grad)?);
        let (x, g) = (x.f32()?, g.f32()?);
        let n = self.weight.len();
        let w = &self.weight[..];
        let mut dx = vec![0f32; x.len()];
        let chunk = n * rows_per_task(n);
        dx.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .for_each(|(dx, (x, g))| {
                for ((dx, x), g) in dx
                    .chunks_exact_mut(n)
                    .zip(x.chunks_exact(n))
                    .zip(g.chunks_exact(n))
                {
                    let r = self.inverse_rms(x);
                    let wgx: f64 = (0..n)
                        .map(|j| f64::from(w[j] * g[j]) * f64::from(x[j]))
                        .sum();
                    let k = (f64::from(r).powi(3) * wgx / n as f64) as f32;
                    for j in 0..n {
                        dx[j] = r * w[j] * g[j] - x[j] * k;
                    }
                }
            });
        Ok(Some(tensor(dx, arg.shape())?))
    }
}

/// `silu(gate) · up`, elementwise.
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.dims() != up.dims() {
        bail!("SwiGLU of {:?} and {:?}", gate.dims(), up.dims());
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

struct SwiGlu;

/// `e^−v` of every element (`σ(v) = 1 / (1 + e^−v)`).
fn exp_of_negated(v: &[f32]) -> Vec<f32> {
    let mut e: Vec<f32> = v.iter().map(|v| -v).collect();
    exp(&mut e);
    e
}

const ELEMENTS_PER_TASK: usize = 16 * 1024;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (gate, up) = (slice(s1, l1)?, slice(s2, l2)?);
        let mut y = vec![0f32; gate.len()];
        y.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(gate.par_chunks(ELEMENTS_PER_TASK))
            .zip(up.par_chunks(ELEMENTS_PER_TASK))
            .for_each(|((y, gate), up)| {
                let e = exp_of_negated(gate);
                for (((y, &g), &u), &e) in y.iter_mut().zip(gate).zip(up).zip(&e) {
                    *y = g * u / (1.0 + e);
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    /// `∂gate = ∂y · u · σ(g)(1 + g(1 − σ(g)))`, `∂up = ∂y · g σ(g)`.
    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (g_values, u_values, dy_values) =
            (Values::of(gate)?, Values::of(up)?, Values::of(&grad)?);
        let (g, u, dy) = (g_values.f32()?, u_values.f32()?, dy_values.f32()?);
        let mut d_gate = vec![0f32; g.len()];
        let mut d_up = vec![0f32; g.len()];
        d_gate
            .par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(d_up.par_chunks_mut(ELEMENTS_PER_TASK))
            .enumerate()
            .for_each(|(t, (d_gate, d_up))| {
                let at = t * ELEMENTS_PER_TASK;
                let e = exp_of_negated(&g[at..at + d_gate.len()]);
                for i in 0..d_gate.len() {
                    let (g, u, dy) = (g[at + i], u[at + i], dy[at + i]);
                    let s = 1.0 / (1.0 + e[i]);
                    d_gate[i] = dy * u * s * (1.0 + g * (1.0 - s));
                    d_up[i] = dy * g * s;
                }
            });
        Ok((
            Some(tensor(d_gate, gate.shape())?),
            Some(tensor(d_up, up.shape())?),
        ))
    }
}

/// Per-token RoPE angles of a training batch: row `t` of `cos`/`sin` holds the `head_dim / 2`
/// pair angles of token `t`'s position within its own example.
pub(crate) struct RopeRows {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub half: usize,
}

/// Interleaved RoPE on `x` of shape `(…, tokens, heads · head_dim)`: within each head, pair
/// `(2i, 2i + 1)` turns by token angle `i`.
pub(crate) fn rope(x: &Tensor, rows: &Arc<RopeRows>, heads: usize) -> Result<Tensor> {
    let width = heads * rows.half * 2;
    if x.dims().last() != Some(&width) || x.elem_count() / width != rows.cos.len() / rows.half {
        bail!(
            "RoPE of {:?} with {heads} heads of {} and {} token rows",
            x.dims(),
            rows.half * 2,
            rows.cos.len() / rows.half.max(1)
        );
    }
    x.contiguous()?.apply_op1(Rope {
        rows: rows.clone(),
        width,
    })
}

struct Rope {
    rows: Arc<RopeRows>,
    width: usize,
}

impl Rope {
    /// Turns every token row of `x` by its angles, or by their negatives (`inverse`, the
    /// backward pass: a rotation's transpose is its inverse).
    fn turn(&self, x: &[f32], inverse: bool) -> Vec<f32> {
        let (half, width) = (self.rows.half, self.width);
        let sign = if inverse { -1.0 } else { 1.0 };
        let mut y = vec![0f32; x.len()];
        let per_task = rows_per_task(width);
        y.par_chunks_mut(width * per_task)
            .zip(x.par_chunks(width * per_task))
            .enumerate()
            .for_each(|(t, (y, x))| {
                for (r, (y, x)) in y
                    .chunks_exact_mut(width)
                    .zip(x.chunks_exact(width))
                    .enumerate()
                {
                    let token = t * per_task + r;
                    let cos = &self.rows.cos[token * half..(token + 1) * half];
                    let sin = &self.rows.sin[token * half..(token + 1) * half];
                    for (y, x) in y.chunks_exact_mut(2 * half).zip(x.chunks_exact(2 * half)) {
                        for i in 0..half {
                            let (even, odd) = (x[2 * i], x[2 * i + 1]);
                            let (c, s) = (cos[i], sign * sin[i]);
                            y[2 * i] = even * c - odd * s;
                            y[2 * i + 1] = even * s + odd * c;
                        }
                    }
                }
            });
        y
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = self.turn(slice(storage, layout)?, false);
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let dx = self.turn(Values::of(&grad)?.f32()?, true);
        Ok(Some(tensor(dx, arg.shape())?))
    }
}

/// The shape of one batch's attention: `rows` packed rows of `len` tokens; a token sees the
/// tokens at or before it that share its segment (its own example).
pub(crate) struct AttentionShape {
    pub rows: usize,
    pub len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub segments: Vec<u32>,
}

impl AttentionShape {
    /// Whether token `i` of `row` sees token `j`.
    fn sees(&self, row: usize, i: usize, j: usize) -> bool {
        let segments = &self.segments[row * self.len..(row + 1) * self.len];
        j <= i && segments[j] == segments[i]
    }
}

/// Queries per block: a block's scores against the keys up to its last query are one product,
/// so the causal mask wastes at most one block's worth of the (L, L) scores.
const QUERY_BLOCK: usize = 64;

/// Causal grouped-query attention of `q` `(rows, len, heads · d)` over `k`, `v`
/// `(rows, len, kv_heads · d)`, returning `(rows, len, heads · d)`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    shape: &Arc<AttentionShape>,
) -> Result<Tensor> {
    let s = shape;
    let tokens = s.rows * s.len;
    if s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) || s.segments.len() != tokens {
        bail!(
            "attention of {} heads over {} key/value heads and {} segment ids for {tokens} tokens",
            s.heads,
            s.kv_heads,
            s.segments.len()
        );
    }
    if q.elem_count() != tokens * s.heads * s.head_dim
        || k.elem_count() != tokens * s.kv_heads * s.head_dim
        || v.dims() != k.dims()
    {
        bail!(
            "attention of q {:?}, k {:?}, v {:?} for {tokens} tokens",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        Attention {
            shape: shape.clone(),
            log_sums: Mutex::new(Vec::new()),
        },
    )
}

struct Attention {
    shape: Arc<AttentionShape>,
    /// `logsumexp` of each (row, head, token)'s scaled scores, from the forward pass, so the
    /// backward pass recomputes probabilities without a second max-and-sum sweep.
    log_sums: Mutex<Vec<f32>>,
}

/// One (row, head) of the attention, and the key/value head its group shares.
#[derive(Clone, Copy)]
struct Head {
    row: usize,
    head: usize,
    kv: usize,
}

impl Attention {
    fn scale(&self) -> f32 {
        1.0 / (self.shape.head_dim as f32).sqrt()
    }

    fn heads(&self) -> Vec<Head> {
        let s = &self.shape;
        let group = s.heads / s.kv_heads;
        (0..s.rows)
            .flat_map(|row| (0..s.heads).map(move |head| (row, head)))
            .map(|(row, head)| Head {
                row,
                head,
                kv: head / group,
            })
            .collect()
    }

    /// Tokens `tokens` of head `head` in a token-major buffer of `count` heads per token, as a
    /// `(tokens, d)` matrix.
    fn rows<'a>(
        &self,
        buffer: &'a [f32],
        row: usize,
        head: usize,
        count: usize,
        tokens: Range<usize>,
    ) -> View<'a> {
        let d = self.shape.head_dim;
        let at = ((row * self.shape.len + tokens.start) * count + head) * d;
        View {
            data: &buffer[at..],
            rows: tokens.len(),
            cols: d,
            row_stride: count * d,
            col_stride: 1,
        }
    }

    /// Scaled scores of queries `block` against keys `0..block.end`, `(block, block.end)`
    /// row-major, with the positions a query does not see set to −∞.
    fn scores(&self, q: &[f32], k: &[f32], h: Head, block: &Range<usize>) -> Vec<f32> {
        let s = &*self.shape;
        let keys = block.end;
        let mut scores = vec![0f32; block.len() * keys];
        gemm_with(
            &mut scores,
            false,
            self.scale(),
            self.rows(q, h.row, h.head, s.heads, block.clone()),
            self.rows(k, h.row, h.kv, s.kv_heads, 0..keys).t(),
            false,
        );
        for (i, row) in block.clone().zip(scores.chunks_exact_mut(keys)) {
            for (j, score) in row.iter_mut().enumerate() {
                if !s.sees(h.row, i, j) {
                    *score = f32::NEG_INFINITY;
                }
            }
        }
        scores
    }
}

fn blocks(len: usize) -> impl Iterator<Item = Range<usize>> {
    (0..len)
        .step_by(QUERY_BLOCK)
        .map(move |start| start..(start + QUERY_BLOCK).min(len))
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let s = &*self.shape;
        let (d, len) = (s.head_dim, s.len);
        // Each (row, head) is one task, writing its own (len, d) block and log-sums.
        let outputs: Vec<(Vec<f32>, Vec<f32>)> = self
            .heads()
            .into_par_iter()
            .map(|h| {
                let mut out = vec![0f32; len * d];
                let mut log_sums = vec![0f32; len];
                for block in blocks(len) {
                    let keys = block.end;
                    let mut p = self.scores(q, k, h, &block);
                    for (i, row) in block.clone().zip(p.chunks_exact_mut(keys)) {
                        // A token always sees itself, so the maximum is finite.
                        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                        for e in row.iter_mut() {
                            *e -= max;
                        }
                        exp(row);
                        let sum: f32 = row.iter().sum();
                        for e in row.iter_mut() {
                            *e /= sum;
                        }
                        log_sums[i] = max + sum.ln();
                    }
                    gemm_with(
                        &mut out[block.start * d..block.end * d],
                        false,
                        1.0,
                        View::new(&p, block.len(), keys),
                        self.rows(v, h.row, h.kv, s.kv_heads, 0..keys),
                        false,
                    );
                }
                (out, log_sums)
            })
            .collect();
        let width = s.heads * d;
        let mut y = vec![0f32; s.rows * len * width];
        let mut log_sums = Vec::with_capacity(outputs.len() * len);
        for (h, (out, sums)) in self.heads().into_iter().zip(outputs) {
            for i in 0..len {
                let at = (h.row * len + i) * width + h.head * d;
                y[at..at + d].copy_from_slice(&out[i * d..(i + 1) * d]);
            }
            log_sums.extend(sums);
        }
        *self.log_sums.lock().unwrap_or_else(|e| e.into_inner()) = log_sums;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    /// With `P = exp(S − logsumexp)` and `D_i = ∂o_i · o_i`: `∂S = P ⊙ (∂O · Vᵀ − D)`,
    /// `∂Q = scale ∂S · K`, `∂K = scale ∂Sᵀ · Q`, `∂V = Pᵀ · ∂O`; key/value gradients of a
    /// group's heads are summed in head order.
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (qv, kv, vv, ov, gv) = (
            Values::of(q)?,
            Values::of(k)?,
            Values::of(v)?,
            Values::of(res)?,
            Values::of(&grad)?,
        );
        let (qs, ks, vs, os, dos) = (qv.f32()?, kv.f32()?, vv.f32()?, ov.f32()?, gv.f32()?);
        let log_sums = self.log_sums.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shape;
        let (d, len, scale) = (s.head_dim, s.len, self.scale());
        if log_sums.len() != s.rows * s.heads * len {
            bail!("fused attention's backward pass ran before its forward pass");
        }
        let heads = self.heads();
        let grads: Vec<[Vec<f32>; 3]> = heads
            .par_iter()
            .enumerate()
            .map(|(task, &h)| {
                let (mut dq, mut dk, mut dv) = (
                    vec![0f32; len * d],
                    vec![0f32; len * d],
                    vec![0f32; len * d],
                );
                for block in blocks(len) {
                    let keys = block.end;
                    let d_out = self.rows(dos, h.row, h.head, s.heads, block.clone());
                    let mut p = self.scores(qs, ks, h, &block);
                    for (i, row) in block.clone().zip(p.chunks_exact_mut(keys)) {
                        let log_sum = log_sums[task * len + i];
                        for e in row.iter_mut() {
                            *e -= log_sum;
                        }
                        exp(row);
                    }
                    let mut dp = vec![0f32; block.len() * keys];
                    gemm_with(
                        &mut dp,
                        false,
                        1.0,
                        d_out,
                        self.rows(vs, h.row, h.kv, s.kv_heads, 0..keys).t(),
                        false,
                    );
                    for (i, (ds, p)) in block
                        .clone()
                        .zip(dp.chunks_exact_mut(keys).zip(p.chunks_exact(keys)))
                    {
                        let at = ((h.row * len + i) * s.heads + h.head) * d;
                        let big_d = dot(&dos[at..at + d], &os[at..at + d]);
                        for (ds, &p) in ds.iter_mut().zip(p) {
                            *ds = p * (*ds - big_d) * scale;
                        }
                    }
                    let ds = dp;
                    gemm_with(
                        &mut dq[block.start * d..block.end * d],
                        false,
                        1.0,
                        View::new(&ds, block.len(), keys),
                        self.rows(ks, h.row, h.kv, s.kv_heads, 0..keys),
                        false,
                    );
                    gemm_with(
                        &mut dk[..keys * d],
                        true,
                        1.0,
                        View::new(&ds, block.len(), keys).t(),
                        self.rows(qs, h.row, h.head, s.heads, block.clone()),
                        false,
                    );
                    gemm_with(
                        &mut dv[..keys * d],
                        true,
                        1.0,
                        View::new(&p, block.len(), keys).t(),
                        d_out,
                        false,
                    );
                }
                [dq, dk, dv]
            })
            .collect();
        let q_width = s.heads * d;
        let kv_width = s.kv_heads * d;
        let mut dq = vec![0f32; s.rows * len * q_width];
        let mut dk = vec![0f32; s.rows * len * kv_width];
        let mut dv = vec![0f32; s.rows * len * kv_width];
        for (h, [bq, bk, bv]) in heads.into_iter().zip(grads) {
            for i in 0..len {
                let token = h.row * len + i;
                let block = i * d..(i + 1) * d;
                let at = token * q_width + h.head * d;
                dq[at..at + d].copy_from_slice(&bq[block.clone()]);
                let at = token * kv_width + h.kv * d;
                for (sum, part) in [(&mut dk, &bk), (&mut dv, &bv)] {
                    for (s, p) in sum[at..at + d].iter_mut().zip(&part[block.clone()]) {
                        *s += p;
                    }
                }
            }
        }
        Ok((
            Some(tensor(dq, q.shape())?),
            Some(tensor(dk, k.shape())?),
            Some(tensor(dv, v.shape())?),
        ))
    }
}

/// `Σ_i −log softmax(logits_i)[targets_i]` for `logits` `(n, vocab)`, as a scalar tensor: the
/// summed next-token loss. Its backward pass writes `g · (softmax(z_i) − onehot(t_i))` directly,
/// where `log_softmax` then `gather` would make several logits-sized temporaries (50 MB each
/// for 256 positions of a 49k vocabulary).
pub(crate) fn cross_entropy_sum(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let (n, vocab) = logits.dims2()?;
    if targets.len() != n {
        bail!("{} targets for {n} rows of logits", targets.len());
    }
    if let Some(bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        bail!("target {bad} is outside the vocabulary of {vocab}");
    }
    logits.contiguous()?.apply_op1(CrossEntropy {
        targets: targets.to_vec(),
        log_sums: Mutex::new(Vec::new()),
    })
}

struct CrossEntropy {
    targets: Vec<u32>,
    /// Each row's `logsumexp`, from the forward pass for the backward pass.
    log_sums: Mutex<Vec<f64>>,
}

/// `logsumexp` of a row, summed in f64.
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut e: Vec<f32> = row.iter().map(|v| v - max).collect();
    exp(&mut e);
    let sum: f64 = e.iter().map(|&v| f64::from(v)).sum();
    f64::from(max) + sum.ln()
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let logits = slice(storage, layout)?;
        let vocab = logits.len() / self.targets.len().max(1);
        let log_sums: Vec<f64> = (0..self.targets.len())
            .into_par_iter()
            .map(|i| log_sum_exp(&logits[i * vocab..(i + 1) * vocab]))
            .collect();
        let total: f64 = (log_sums.iter().enumerate())
            .map(|(i, lse)| lse - f64::from(logits[i * vocab + self.targets[i] as usize]))
            .sum();
        *self.log_sums.lock().unwrap_or_else(|e| e.into_inner()) = log_sums;
        Ok((CpuStorage::F32(vec![total as f32]), Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let values = Values::of(arg)?;
        let logits = values.f32()?;
        let vocab = logits.len() / self.targets.len().max(1);
        let log_sums = self.log_sums.lock().unwrap_or_else(|e| e.into_inner());
        if log_sums.len() != self.targets.len() {
            bail!("the cross-entropy's backward pass ran before its forward pass");
        }
        let mut out = vec![0f32; logits.len()];
        out.par_chunks_mut(vocab.max(1))
            .enumerate()
            .for_each(|(i, out)| {
                let row = &logits[i * vocab..(i + 1) * vocab];
                let lse = log_sums[i] as f32;
                for (o, &z) in out.iter_mut().zip(row) {
                    *o = z - lse;
                }
                exp(out);
                for o in out.iter_mut() {
                    *o *= g;
                }
                out[self.targets[i] as usize] -= g;
            });
        Ok(Some(tensor(out, arg.shape())?))
    }
}

/// A row-major or transposed view of a matrix in a slice: element `(i, j)` sits at
/// `i · row_stride + j · col_stride`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> View<'a> {
    /// `data` as a row-major `rows × cols` matrix.
    fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Whether every element the view names lies inside its slice.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `out = keep · out + scale · a · b`, with `out` row-major `a.rows × b.cols`, on the `gemm`
/// crate's kernels (AVX-512 or AVX2, picked at run time) and rayon's threads. Going to `gemm`
/// directly rather than through candle's matmul saves a copy of each input and output.
fn gemm_into(out: &mut [f32], keep: bool, scale: f32, a: View, b: View) {
    gemm_with(out, keep, scale, a, b, true);
}

/// [`gemm_into`], on this thread only where `parallel` is false (inside a parallel task).
fn gemm_with(out: &mut [f32], keep: bool, scale: f32, a: View, b: View, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && out.len() == m * n && a.in_bounds() && b.in_bounds(),
        "gemm of {}×{} by {}×{} into {}",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        out.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !keep {
            out.fill(0.0);
        }
        return;
    }
    // Splitting a small product costs more than it saves.
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 && m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    #[allow(unsafe_code)]
    // SAFETY: the assertion above keeps every element the three views name inside their
    // slices, and `out` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            keep,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The adapter branch of a LoRA layer in a training pass.
pub(crate) struct LoraBranch<'a> {
    /// `(in, r)`
    pub a_t: &'a Tensor,
    /// `(r, out)`
    pub b_t: &'a Tensor,
    pub scale: f32,
    /// LoRA dropout's mask over the input (zeros and `1 / (1 − p)`), if dropout is on.
    pub mask: Option<Vec<f32>>,
}

/// `x · Wᵀ`, plus `s · ((x ⊙ mask) · Aᵀ) · Bᵀ` with an adapter branch, for `x` of any rank with
/// `in` features last. `w` `(out, in)` is frozen: the backward pass yields the input's gradient
/// and the branch's, never the weight-sized gradient of `W` that nobody reads (a third of the
/// arithmetic, and most of the memory, of a LoRA step).
pub(crate) fn linear(x: &Tensor, w: &Tensor, lora: Option<LoraBranch>) -> Result<Tensor> {
    let (out, input) = w.dims2()?;
    if x.dims().last() != Some(&input) {
        bail!("a linear layer of {out}×{input} applied to {:?}", x.dims());
    }
    let w = w.contiguous()?;
    let x = x.contiguous()?;
    let Some(lora) = lora else {
        return x.apply_op1(FrozenLinear { w });
    };
    let r = lora.a_t.dim(1)?;
    if lora.a_t.dims() != [input, r] || lora.b_t.dims() != [r, out] {
        bail!(
            "a LoRA pair of {:?} and {:?} on a {out}×{input} layer",
            lora.a_t.dims(),
            lora.b_t.dims()
        );
    }
    if lora
        .mask
        .as_ref()
        .is_some_and(|m| m.len() != x.elem_count())
    {
        bail!("a dropout mask of the wrong size");
    }
    x.apply_op3(
        &lora.a_t.contiguous()?,
        &lora.b_t.contiguous()?,
        LoraLinear {
            w,
            scale: lora.scale,
            mask: lora.mask,
        },
    )
}

struct FrozenLinear {
    /// `(out, in)`, contiguous.
    w: Tensor,
}

/// The output shape of a linear layer: the input's, with `out` features last.
fn with_features(shape: &Shape, out: usize) -> Shape {
    let mut dims = shape.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = out;
    }
    dims.into()
}

impl FrozenLinear {
    fn forward(&self, x: &[f32], shape: &Shape) -> Result<(Vec<f32>, Shape)> {
        let (out, input) = self.w.dims2()?;
        let rows = x.len() / input.max(1);
        let w = Values::of(&self.w)?;
        let mut y = vec![0f32; rows * out];
        gemm_into(
            &mut y,
            false,
            1.0,
            View::new(x, rows, input),
            View::new(w.f32()?, out, input).t(),
        );
        Ok((y, with_features(shape, out)))
    }

    /// `∂x = ∂y · W`, when `x` needs a gradient at all.
    fn input_grad(&self, x: &Tensor, g: &[f32]) -> Result<Option<Vec<f32>>> {
        if !x.track_op() {
            return Ok(None);
        }
        let (out, input) = self.w.dims2()?;
        let rows = g.len() / out.max(1);
        let w = Values::of(&self.w)?;
        let mut dx = vec![0f32; rows * input];
        gemm_into(
            &mut dx,
            false,
            1.0,
            View::new(g, rows, out),
            View::new(w.f32()?, out, input),
        );
        Ok(Some(dx))
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, shape) = self.forward(slice(storage, layout)?, layout.shape())?;
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let g = Values::of(&grad)?;
        self.input_grad(arg, g.f32()?)?
            .map(|dx| tensor(dx, arg.shape()))
            .transpose()
    }
}

struct LoraLinear {
    w: Tensor,
    scale: f32,
    mask: Option<Vec<f32>>,
}

impl LoraLinear {
    fn frozen(&self) -> FrozenLinear {
        FrozenLinear { w: self.w.clone() }
    }

    /// The branch's input `x_d` (`x ⊙ mask`, or `x` itself without dropout) and its low-rank
    /// image `t = x_d · Aᵀ`, `(rows, r)`: both passes need them.
    fn branch_input<'a>(
        &self,
        x: &'a [f32],
        a_t: &[f32],
        scratch: &'a mut Vec<f32>,
    ) -> Result<(&'a [f32], Vec<f32>)> {
        let (_, input) = self.w.dims2()?;
        let (rows, r) = (x.len() / input.max(1), a_t.len() / input.max(1));
        let xd = match &self.mask {
            None => x,
            Some(mask) => {
                scratch.clear();
                scratch.extend(x.iter().zip(mask).map(|(x, m)| x * m));
                scratch
            }
        };
        let mut low = vec![0f32; rows * r];
        gemm_into(
            &mut low,
            false,
            1.0,
            View::new(xd, rows, input),
            View::new(a_t, input, r),
        );
        Ok((xd, low))
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, a_t, b_t) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (mut y, shape) = self.frozen().forward(x, l1.shape())?;
        let (out, input) = self.w.dims2()?;
        let (rows, r) = (x.len() / input.max(1), a_t.len() / input.max(1));
        let mut scratch = Vec::new();
        let (_, low) = self.branch_input(x, a_t, &mut scratch)?;
        gemm_into(
            &mut y,
            true,
            self.scale,
            View::new(&low, rows, r),
            View::new(b_t, r, out),
        );
        Ok((CpuStorage::F32(y), shape))
    }

    /// With `t = x_d · Aᵀ` and `u = ∂y · B`: `∂x = ∂y · W + s (u · A) ⊙ mask`,
    /// `∂Bᵀ = s tᵀ · ∂y`, `∂Aᵀ = s x_dᵀ · u`.
    fn bwd(
        &self,
        x: &Tensor,
        a_t: &Tensor,
        b_t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (xv, av, bv, gv) = (
            Values::of(x)?,
            Values::of(a_t)?,
            Values::of(b_t)?,
            Values::of(&grad)?,
        );
        let (xs, a, b, g) = (xv.f32()?, av.f32()?, bv.f32()?, gv.f32()?);
        let (out, input) = self.w.dims2()?;
        let (rows, r) = (xs.len() / input.max(1), a.len() / input.max(1));
        let mut scratch = Vec::new();
        let (xd, low) = self.branch_input(xs, a, &mut scratch)?;
        let mut u = vec![0f32; rows * r];
        gemm_into(
            &mut u,
            false,
            1.0,
            View::new(g, rows, out),
            View::new(b, r, out).t(),
        );
        let mut d_b = vec![0f32; r * out];
        gemm_into(
            &mut d_b,
            false,
            self.scale,
            View::new(&low, rows, r).t(),
            View::new(g, rows, out),
        );
        let mut d_a = vec![0f32; input * r];
        gemm_into(
            &mut d_a,
            false,
            self.scale,
            View::new(xd, rows, input).t(),
            View::new(&u, rows, r),
        );
        let dx = match self.frozen().input_grad(x, g)? {
            None => None,
            Some(mut dx) => {
                let a_view = View::new(a, input, r).t();
                match &self.mask {
                    None => gemm_into(&mut dx, true, self.scale, View::new(&u, rows, r), a_view),
                    Some(mask) => {
                        let mut branch = vec![0f32; rows * input];
                        gemm_into(&mut branch, false, 1.0, View::new(&u, rows, r), a_view);
                        for ((dx, b), m) in dx.iter_mut().zip(&branch).zip(mask) {
                            *dx += self.scale * b * m;
                        }
                    }
                }
                Some(tensor(dx, x.shape())?)
            }
        };
        Ok((
            dx,
            Some(tensor(d_a, a_t.shape())?),
            Some(tensor(d_b, b_t.shape())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Var};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919 % 211) as f32 - 105.0) / 50.0)
            .collect()
    }

    fn var(shape: &[usize], seed: usize) -> Var {
        let n = shape.iter().product();
        Var::from_vec(values(n, seed), shape, &Device::Cpu).unwrap()
    }

    /// `Σ y · r` for a fixed `r`, so every output element carries a distinct gradient.
    fn probe(y: &Tensor) -> Tensor {
        let r = Tensor::from_vec(values(y.elem_count(), 3), y.shape(), &Device::Cpu).unwrap();
        (y * r).unwrap().sum_all().unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, tolerance: f32) {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= tolerance * y.abs().max(1.0),
                "element {i}: {x} vs {y}"
            );
        }
    }

    /// The fused op and a reference written with candle's operations agree on the values and
    /// on the gradients of every input.
    fn same_as_reference(
        inputs: &[Var],
        fused: impl Fn(&[Tensor]) -> Result<Tensor>,
        reference: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) {
        let twins: Vec<Var> = inputs
            .iter()
            .map(|v| Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap())
            .collect();
        let a: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
        let b: Vec<Tensor> = twins.iter().map(|v| v.as_tensor().clone()).collect();
        let (ya, yb) = (fused(&a).unwrap(), reference(&b).unwrap());
        close(&ya, &yb, 1e-5);
        let (ga, gb) = (
            probe(&ya).backward().unwrap(),
            probe(&yb).backward().unwrap(),
        );
        for (x, y) in inputs.iter().zip(&twins) {
            close(ga.get(x).unwrap(), gb.get(y).unwrap(), 1e-4);
        }
    }

    #[test]
    fn rms_norm_matches_candle() {
        let weight = Arc::new(values(24, 5));
        let w = Tensor::new(weight.as_slice(), &Device::Cpu).unwrap();
        same_as_reference(
            &[var(&[2, 3, 24], 0)],
            |x| rms_norm(&x[0], &weight, 1e-5),
            |x| candle_nn::ops::rms_norm_slow(&x[0], &w, 1e-5),
        );
    }

    #[test]
    fn swiglu_matches_candle() {
        same_as_reference(
            &[var(&[3, 40], 0), var(&[3, 40], 1)],
            |x| swiglu(&x[0], &x[1]),
            |x| candle_nn::ops::silu(&x[0])? * &x[1],
        );
    }

    #[test]
    fn rope_matches_candle_interleaved_rope() {
        let (len, heads, d) = (5, 3, 8);
        let angles = |f: fn(f32) -> f32| -> Vec<f32> {
            (0..len * d / 2)
                .map(|i| f((i / (d / 2)) as f32 * 0.7f32.powi((i % (d / 2)) as i32)))
                .collect()
        };
        let rows = Arc::new(RopeRows {
            cos: angles(f32::cos),
            sin: angles(f32::sin),
            half: d / 2,
        });
        let table = |v: &Vec<f32>| Tensor::from_slice(v, (len, d / 2), &Device::Cpu).unwrap();
        let (cos, sin) = (table(&rows.cos), table(&rows.sin));
        same_as_reference(
            &[var(&[1, len, heads * d], 0)],
            |x| rope(&x[0], &rows, heads),
            |x| {
                let by_head = x[0]
                    .reshape((1, len, heads, d))?
                    .transpose(1, 2)?
                    .contiguous()?;
                candle_nn::rotary_emb::rope_i_slow(&by_head, &cos, &sin)?
                    .transpose(1, 2)?
                    .reshape((1, len, heads * d))
            },
        );
    }

    #[test]
    fn attention_matches_masked_softmax_attention() {
        // Row 0 packs two examples; row 1 is one example then two padding tokens.
        let short = vec![0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 9, 8];
        // Longer than a query block: examples of 50, 60 and 40 tokens in one row.
        let long: Vec<u32> = (0..150u32)
            .map(|i| u32::from(i >= 50) + u32::from(i >= 110))
            .collect();
        for (rows, len, segments) in [(2, 7, short), (1, 150, long)] {
            attention_case(rows, len, segments);
        }
    }

    fn attention_case(rows: usize, len: usize, segments: Vec<u32>) {
        let (heads, kv_heads, d) = (4, 2, 8);
        let shape = Arc::new(AttentionShape {
            rows,
            len,
            heads,
            kv_heads,
            head_dim: d,
            segments: segments.clone(),
        });
        let mut mask = vec![0f32; rows * len * len];
        for r in 0..rows {
            for i in 0..len {
                for j in 0..len {
                    let (a, b) = (segments[r * len + i], segments[r * len + j]);
                    if j > i || a != b {
                        mask[(r * len + i) * len + j] = -1e9;
                    }
                }
            }
        }
        let mask = Tensor::from_vec(mask, (rows, 1, len, len), &Device::Cpu).unwrap();
        let reference = |x: &[Tensor]| -> Result<Tensor> {
            let split = |t: &Tensor, n: usize| -> Result<Tensor> {
                t.reshape((rows, len, n, d))?.transpose(1, 2)?.contiguous()
            };
            let q = split(&x[0], heads)?;
            // Each key/value head repeated for the query heads of its group.
            let repeat = |t: &Tensor| -> Result<Tensor> {
                let group = heads / kv_heads;
                split(t, kv_heads)?
                    .unsqueeze(2)?
                    .broadcast_as((rows, kv_heads, group, len, d))?
                    .contiguous()?
                    .reshape((rows, heads, len, d))
            };
            let (k, v) = (repeat(&x[1])?, repeat(&x[2])?);
            let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(&mask)?;
            let p = candle_nn::ops::softmax(&scores, D::Minus1)?;
            p.matmul(&v)?
                .transpose(1, 2)?
                .reshape((rows, len, heads * d))
        };
        same_as_reference(
            &[
                var(&[rows, len, heads * d], 0),
                var(&[rows, len, kv_heads * d], 1),
                var(&[rows, len, kv_heads * d], 2),
            ],
            |x| attention(&x[0], &x[1], &x[2], &shape),
            reference,
        );
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let x = Tensor::zeros((2, 6), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(rms_norm(&x, &Arc::new(vec![1.0; 5]), 1e-5).is_err());
        let y = Tensor::zeros((2, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(swiglu(&x, &y).is_err());
    }

    #[test]
    fn loss_and_gradient_match_log_softmax_and_gather() {
        let values: Vec<f32> = (0..5 * 37)
            .map(|i| ((i * 7919 % 101) as f32 - 50.0) / 9.0)
            .collect();
        let targets = [3u32, 0, 36, 17, 17];
        let fused = Var::from_vec(values.clone(), (5, 37), &Device::Cpu).unwrap();
        let plain = Var::from_vec(values, (5, 37), &Device::Cpu).unwrap();
        let loss = cross_entropy_sum(fused.as_tensor(), &targets).unwrap();
        let reference = {
            let log_probs = candle_nn::ops::log_softmax(plain.as_tensor(), D::Minus1).unwrap();
            let t = Tensor::new(&targets[..], &Device::Cpu)
                .unwrap()
                .unsqueeze(1)
                .unwrap();
            log_probs
                .gather(&t, 1)
                .unwrap()
                .sum_all()
                .unwrap()
                .neg()
                .unwrap()
        };
        let (a, b) = (
            loss.to_scalar::<f32>().unwrap(),
            reference.to_scalar::<f32>().unwrap(),
        );
        assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        let scale = 0.5;
        let ga = (loss * scale).unwrap().backward().unwrap();
        let gb = (reference * scale).unwrap().backward().unwrap();
        let ga: Vec<f32> = ga
            .get(&fused)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let gb: Vec<f32> = gb
            .get(&plain)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (x, y) in ga.iter().zip(&gb) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn bad_targets_are_errors() {
        let logits = Tensor::zeros((2, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(cross_entropy_sum(&logits, &[1]).is_err());
        let e = cross_entropy_sum(&logits, &[1, 4]).unwrap_err();
        assert!(e.to_string().contains("outside the vocabulary"), "{e}");
    }

    #[test]
    fn lora_linear_matches_candle_matmuls_with_and_without_dropout() {
        let (input, out, r) = (12, 10, 3);
        let w = Tensor::from_vec(values(out * input, 7), (out, input), &Device::Cpu).unwrap();
        let mask: Vec<f32> = (0..2 * 5 * input)
            .map(|i| if i % 3 == 0 { 0.0 } else { 1.5 })
            .collect();
        for mask in [None, Some(mask)] {
            let inputs = [
                var(&[2, 5, input], 0),
                var(&[input, r], 1),
                var(&[r, out], 2),
            ];
            let reference = |x: &[Tensor]| -> Result<Tensor> {
                let base = x[0].broadcast_matmul(&w.t()?)?;
                let dropped = match &mask {
                    Some(m) => (&x[0] * Tensor::from_slice(m, x[0].shape(), &Device::Cpu)?)?,
                    None => x[0].clone(),
                };
                base + (dropped.broadcast_matmul(&x[1])?.broadcast_matmul(&x[2])? * 0.75)?
            };
            same_as_reference(
                &inputs,
                |x| {
                    let branch = LoraBranch {
                        a_t: &x[1],
                        b_t: &x[2],
                        scale: 0.75,
                        mask: mask.clone(),
                    };
                    linear(&x[0], &w, Some(branch))
                },
                reference,
            );
        }
        same_as_reference(
            &[var(&[4, input], 0)],
            |x| linear(&x[0], &w, None),
            |x| x[0].matmul(&w.t()?),
        );
    }
}
