//! Rough speed of the quantized products at a forward pass's shapes:
//! `cargo run --release -p openledger-kernels --example kernel_speed`.

use std::time::Instant;

use openledger_kernels::{Activations, Format, Pool, QMatrix, matmul};

fn main() {
    let pool = Pool::global();
    for format in [Format::Q4_1, Format::Q8_0] {
        for (rows, cols) in [(576, 576), (1536, 576), (576, 1536), (49152, 576)] {
            let bytes: Vec<u8> = (0..rows * cols / 32 * format.block_bytes())
                .map(|i| (i * 7 % 251) as u8 & 0x3B)
                .collect();
            let w = QMatrix::new(format, rows, cols, bytes).unwrap();
            for m in [1usize, 32, 128] {
                let x: Vec<f32> = (0..m * cols).map(|i| (i % 17) as f32 - 8.0).collect();
                let mut acts = Activations::default();
                acts.quantize(&x, cols);
                let mut out = vec![0f32; m * rows];
                let reps = (200_000_000 / (rows * cols * m)).max(3);
                matmul(&w, &acts, &mut out, pool);
                let t = Instant::now();
                for _ in 0..reps {
                    matmul(&w, &acts, &mut out, pool);
                }
                let s = t.elapsed().as_secs_f64() / reps as f64;
                println!(
                    "{format:?} {rows}x{cols} m={m}: {:.1} µs, {:.1} GMAC/s, {:.1} GB/s weights",
                    s * 1e6,
                    (rows * cols * m) as f64 / s / 1e9,
                    w.size() as f64 / s / 1e9
                );
            }
        }
    }
}
