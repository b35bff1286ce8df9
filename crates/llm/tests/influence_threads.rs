//! Gradient attribution must not depend on how many threads compute it: anyone re-checking a
//! record gets the same sketches, whatever their machine. The test runs itself again in child
//! processes with 1, 2 and 4 compute threads (candle reads `RAYON_NUM_THREADS` once per
//! process) and compares the sketches bit for bit.

use std::io::Cursor;
use std::process::Command;

use openledger_llm::influence::{GradientProbe, Sketch};
use openledger_llm::testing::{TinyConfig, tiny_llama_gguf};
use openledger_llm::train::TrainConfig;
use openledger_llm::{ChatMessage, LoraAdapter, Model, Weights};

const CHILD: &str = "OPENLEDGER_SKETCH_CHILD";

/// The sketch of one example under a fixed random adapter, as hex of its bytes.
fn sketch_hex() -> String {
    // Wide enough that candle's matmuls split across threads.
    let config = TinyConfig {
        hidden: 256,
        heads: 8,
        kv_heads: 4,
        ffn: 512,
        ..Default::default()
    };
    let gguf = tiny_llama_gguf(&config);
    let model = Model::read_with(&mut Cursor::new(gguf), Weights::Dequantized).unwrap();
    let lora = TrainConfig::default().lora();
    let mut adapter =
        LoraAdapter::init(lora, model.llama.config(), 7, &openledger_llm::Device::Cpu).unwrap();
    // B starts at zero; give it values so every gradient is non-trivial.
    for pair in adapter.layers.iter_mut().flatten().flatten() {
        pair.b_t = (pair.b_t.ones_like().unwrap() * 0.01).unwrap();
    }
    let segments = model
        .chat
        .as_ref()
        .unwrap()
        .segments(&[
            ChatMessage::new("user", "where is the old mill by the river?"),
            ChatMessage::new(
                "assistant",
                "the mill stands past the third bridge, by the weir",
            ),
        ])
        .unwrap();
    let example = model.tokenizer.encode_segments(&segments, false).unwrap();
    let probe = GradientProbe::new(&model.llama, &adapter).unwrap();
    let (sketch, loss) = probe.gradient(&example, &Sketch::default()).unwrap();
    let mut bytes: Vec<u8> = sketch.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes.extend(loss.to_le_bytes());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn gradient_sketches_are_identical_across_thread_counts() {
    if std::env::var_os(CHILD).is_some() {
        println!("SKETCH {}", sketch_hex());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut seen: Vec<(usize, String)> = Vec::new();
    for threads in [1, 2, 4] {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "gradient_sketches_are_identical_across_thread_counts",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("RAYON_NUM_THREADS", threads.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.split("SKETCH ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("child with {threads} threads printed no sketch: {stdout}"))
            .to_string();
        seen.push((threads, line));
    }
    for (threads, sketch) in &seen[1..] {
        assert!(
            *sketch == seen[0].1,
            "the sketch with {threads} threads differs from the one with 1"
        );
    }
}
