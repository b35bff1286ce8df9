//! CPU kernels for the model runtime.
//!
//! candle's CPU backend has no SIMD kernel for Q4_1 (the format of the default base model) and
//! dispatches each small matmul through general machinery; decoding spent most of its time
//! there. These kernels are written for the shapes a forward pass actually has (a handful of
//! activation rows against a quantized weight matrix, per token) and chosen at run time:
//! AVX2 + FMA + F16C where the CPU has them, portable Rust elsewhere
//! (`OPENLEDGER_PORTABLE_KERNELS=1` forces the portable ones, for testing).
//!
//! - [`quant`]: GGUF block formats and 8-bit activations; [`matmul`] runs a product on a pool;
//! - [`vector`]: f32 dot products and `y += a·x`, the inner loops of attention and LoRA;
//! - [`pool`]: the persistent thread pool every parallel loop runs on.

// Kernels index several arrays by the same counter; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]

pub mod pool;
pub mod quant;
pub mod vector;

pub use half::f16;
pub use pool::Pool;
pub use quant::{Activations, Format, QMatrix};

/// `out[i · w.rows() + r] = Σ_c w[r, c] · x[i, c]` for every activation row `i` of `acts`,
/// spread over `pool` by blocks of weight rows (each output element is computed by one thread,
/// the same way whatever the thread count).
pub fn matmul(w: &QMatrix, acts: &Activations, out: &mut [f32], pool: &Pool) {
    matmul_many(&mut [(w, out)], acts, pool);
}

/// Several products of the same activations (`q`, `k` and `v` of one input, say) as one job,
/// so the threads meet once instead of once per matrix and small matrices balance with large.
pub fn matmul_many(products: &mut [(&QMatrix, &mut [f32])], acts: &Activations, pool: &Pool) {
    // Small blocks balance the threads; large ones keep a block of weight rows in L1 while
    // every activation row passes over it.
    let min_rows = if acts.rows() > 8 { 32 } else { 16 };
    let total: usize = products.iter().map(|(w, _)| w.rows()).sum();
    let step = total
        .div_ceil(pool.threads() * 8)
        .max(min_rows)
        .next_multiple_of(4);
    let mut pieces = Vec::new();
    let mut sinks = Vec::with_capacity(products.len());
    let mut matrices = Vec::with_capacity(products.len());
    for (index, (w, out)) in products.iter_mut().enumerate() {
        matrices.push(*w);
        assert_eq!(
            out.len(),
            acts.rows() * w.rows(),
            "output holds one value per (activation row, weight row)"
        );
        sinks.push(quant::Out::new(out, w.rows()));
        pieces.extend(
            (0..w.rows())
                .step_by(step)
                .map(|start| (index, start..(start + step).min(w.rows()))),
        );
    }
    pool.run(pieces.len(), &|task| {
        let (index, rows) = pieces[task].clone();
        matrices[index].dot_rows(rows, acts, &sinks[index]);
    });
}
