//! Diagnostic: our logits beside llama.cpp's on the same tokens (teacher-forced).
//! `cargo run --release -p openledger-llm --example logit_diff -- MODEL.gguf DUMP` where DUMP.json
//! and DUMP.npy come from a llama-cpp-python script (prompt ids, greedy tokens, logits).
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let weights = if std::env::var_os("F32").is_some() {
        openledger_llm::Weights::Dequantized
    } else {
        openledger_llm::Weights::Quantized
    };
    let model = openledger_llm::Model::load_with(std::path::Path::new(&args[1]), weights).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}.json", args[2])).unwrap())
            .unwrap();
    let ids: Vec<u32> = meta["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let tokens: Vec<u32> = meta["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let raw = std::fs::read(format!("{}.npy", args[2])).unwrap();
    let header = u16::from_le_bytes([raw[8], raw[9]]) as usize + 10;
    let data: Vec<f32> = raw[header..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let vocab = model.llama.config().vocab_size;
    let mut cache = model.llama.new_cache();
    let mut logits = model.llama.forward(&ids, &mut cache).unwrap();
    for (step, &t) in tokens.iter().enumerate() {
        let theirs = &data[step * vocab..(step + 1) * vocab];
        let max = logits
            .iter()
            .zip(theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let mean = logits
            .iter()
            .zip(theirs)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / vocab as f32;
        println!(
            "step {step:2}: max |Δ| {max:.4}, mean {mean:.4}, ours argmax {} theirs {t}",
            openledger_llm::model::argmax(&logits)
        );
        logits = model.llama.forward(&[t], &mut cache).unwrap();
    }
}
