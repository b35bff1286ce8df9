//! The runtime on a tiny random llama written as a real GGUF: caching, decoding, tokenizer
//! round trips and hostile files.

use std::io::Cursor;

use openledger_llm::testing::{TinyConfig, tiny_llama_gguf, tiny_model};
use openledger_llm::{ChatMessage, FinishReason, LlmError, Model, SamplingParams};

#[test]
fn cached_decoding_matches_recomputing_the_whole_sequence() {
    let model = tiny_model(&TinyConfig::default());
    let tokens: Vec<u32> = model.tokenizer.encode("the cat sat on the mat").unwrap();
    assert!(tokens.len() > 5);

    // All at once.
    let mut fresh = model.llama.new_cache();
    let full = model.llama.forward(&tokens, &mut fresh).unwrap();
    // Prefill half, then one token at a time.
    let mut cache = model.llama.new_cache();
    let half = tokens.len() / 2;
    let mut last = model.llama.forward(&tokens[..half], &mut cache).unwrap();
    for &t in &tokens[half..] {
        last = model.llama.forward(&[t], &mut cache).unwrap();
    }
    assert_eq!(cache.len(), tokens.len());
    let max_diff = full
        .iter()
        .zip(&last)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        max_diff < 1e-3,
        "cached and full logits differ by {max_diff}"
    );
    // And the logits depend on the input (a model that ignores it would pass the above).
    let mut other = model.llama.new_cache();
    let different = model.llama.forward(&tokens[1..], &mut other).unwrap();
    assert!(
        full.iter()
            .zip(&different)
            .any(|(a, b)| (a - b).abs() > 1e-3)
    );
}

#[test]
fn greedy_generation_is_deterministic_and_bounded() {
    let model = tiny_model(&TinyConfig::default());
    let params = SamplingParams {
        max_tokens: 12,
        ..SamplingParams::default()
    };
    let mut streamed = String::new();
    let a = model
        .complete("once upon a time", &params, |piece| {
            streamed.push_str(piece);
            true
        })
        .unwrap();
    let b = model
        .complete("once upon a time", &params, |_| true)
        .unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(streamed, a.text, "streamed pieces add up to the text");
    assert!(a.tokens.len() <= 12);
    if a.tokens.len() == 12 {
        assert_eq!(a.finish_reason, FinishReason::Length);
    }
    // Seeded sampling repeats too, and differs from greedy somewhere across seeds.
    let sampled = |seed| {
        model
            .complete(
                "once upon a time",
                &SamplingParams {
                    temperature: 1.5,
                    seed,
                    max_tokens: 12,
                    ..SamplingParams::default()
                },
                |_| true,
            )
            .unwrap()
            .tokens
    };
    assert_eq!(sampled(3), sampled(3));
    assert!((0..5).any(|seed| sampled(seed) != a.tokens));
}

#[test]
fn stop_strings_cut_the_text_and_a_false_callback_stops() {
    let model = tiny_model(&TinyConfig::default());
    let long = model
        .complete(
            "abc",
            &SamplingParams {
                max_tokens: 40,
                ..SamplingParams::default()
            },
            |_| true,
        )
        .unwrap();
    // Use a piece of what greedy decoding produces as the stop string.
    let chars: Vec<char> = long.text.chars().collect();
    if chars.len() >= 6 {
        let stop: String = chars[3..5].iter().collect();
        let cut = model
            .complete(
                "abc",
                &SamplingParams {
                    max_tokens: 40,
                    stop: vec![stop.clone()],
                    ..SamplingParams::default()
                },
                |_| true,
            )
            .unwrap();
        assert_eq!(cut.finish_reason, FinishReason::Stop);
        assert!(
            !cut.text.contains(&stop),
            "{:?} still holds {stop:?}",
            cut.text
        );
        assert!(long.text.starts_with(&cut.text));
    }
    let mut calls = 0;
    let stopped = model
        .complete(
            "abc",
            &SamplingParams {
                max_tokens: 40,
                ..SamplingParams::default()
            },
            |_| {
                calls += 1;
                false
            },
        )
        .unwrap();
    assert!(
        calls <= 2,
        "generation went on after the callback said stop"
    );
    assert!(stopped.tokens.len() < 40);
}

#[test]
fn tokenizer_round_trips_hard_strings_and_parses_special_tokens() {
    let model = tiny_model(&TinyConfig::default());
    let t = &model.tokenizer;
    for text in [
        "plain words",
        "naïve café — 日本語 🙂",
        "  leading spaces and\ttabs\n\nnewlines   ",
        "fn main() { println!(\"{}\", 12345); }",
        "0123456789",
    ] {
        let ids = t.encode(text).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), text, "{text:?}");
    }
    // Digits are split one by one (the smollm pre-tokenizer).
    assert_eq!(t.encode("123").unwrap().len(), 3);
    // Special tokens in text are single tokens; merges apply.
    let ids = t.encode("<|im_start|>the").unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(ids.len(), 2, "\"the\" is one merged token: {ids:?}");
    assert!(t.is_end_of_generation(2));
}

#[test]
fn chat_uses_the_template_and_refuses_bad_roles() {
    let model = tiny_model(&TinyConfig::default());
    let params = SamplingParams {
        max_tokens: 4,
        ..SamplingParams::default()
    };
    let answer = model
        .chat(&[ChatMessage::new("user", "hi")], &params, |_| true)
        .unwrap();
    assert!(answer.prompt_tokens > 5);
    let err = model
        .chat(&[ChatMessage::new("narrator", "hi")], &params, |_| true)
        .unwrap_err();
    assert!(err.to_string().contains("narrator"));
}

#[test]
fn context_and_token_limits_are_errors_not_panics() {
    let model = tiny_model(&TinyConfig {
        context: 32,
        ..TinyConfig::default()
    });
    let long = "a ".repeat(40);
    let err = model
        .complete(&long, &SamplingParams::default(), |_| true)
        .unwrap_err();
    assert!(
        matches!(err, LlmError::ContextFull { context: 32, .. }),
        "{err}"
    );
    let mut cache = model.llama.new_cache();
    let err = model.llama.forward(&[9_999], &mut cache).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    let err = model
        .complete(
            "a",
            &SamplingParams {
                top_p: 2.0,
                ..SamplingParams::default()
            },
            |_| true,
        )
        .unwrap_err();
    assert!(err.to_string().contains("top_p"));
}

#[test]
fn truncated_and_foreign_files_are_refused_clearly() {
    let bytes = tiny_llama_gguf(&TinyConfig::default());
    for cut in [0, 3, 100, bytes.len() / 2, bytes.len() - 1] {
        let err = match Model::read(&mut Cursor::new(bytes[..cut].to_vec())) {
            Err(e) => e,
            Ok(_) => panic!("a GGUF cut at {cut} of {} bytes loaded", bytes.len()),
        };
        assert!(matches!(err, LlmError::BadModel(_)), "cut {cut}: {err}");
    }
    let err = match Model::read(&mut Cursor::new(b"not a gguf file at all".to_vec())) {
        Err(e) => e,
        Ok(_) => panic!("garbage loaded"),
    };
    assert!(err.to_string().contains("GGUF"), "{err}");
}

/// The same model as a Hugging Face directory (safetensors, tokenizer.json, chat template)
/// loads to the same model: same tokens, same logits; broken directories are named errors.
#[test]
fn a_hugging_face_directory_is_the_same_model() {
    use openledger_llm::{Model, Weights, hf};
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    std::fs::write(
        &gguf,
        openledger_llm::testing::tiny_llama_gguf(&TinyConfig::default()),
    )
    .unwrap();
    let hf_dir = dir.path().join("hf");
    hf::export(&gguf, &hf_dir).unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(hf_dir.join(file).exists(), "{file}");
    }
    let from_gguf = Model::load_with(&gguf, Weights::Dequantized).unwrap();
    let from_hf = hf::load(&hf_dir, Weights::Dequantized).unwrap();
    let text = "<|im_start|>user\nthe theme in thin tin<|im_end|>\n";
    let tokens = from_gguf.tokenizer.encode(text).unwrap();
    assert_eq!(from_hf.tokenizer.encode(text).unwrap(), tokens);
    assert!(from_hf.chat.is_some());
    let run = |m: &Model| {
        let mut cache = m.llama.new_cache();
        m.llama.forward(&tokens, &mut cache).unwrap()
    };
    let (a, b) = (run(&from_gguf), run(&from_hf));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "logits differ by {diff}");

    std::fs::write(hf_dir.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let err = hf::load(&hf_dir, Weights::Dequantized).err().unwrap();
    assert!(err.to_string().contains("gpt2"), "{err}");
    std::fs::remove_file(hf_dir.join("model.safetensors")).unwrap();
    std::fs::write(
        hf_dir.join("config.json"),
        serde_json::to_vec(&from_gguf.llama.config().to_hf(true)).unwrap(),
    )
    .unwrap();
    let err = hf::load(&hf_dir, Weights::Dequantized).err().unwrap();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

/// GGUF weight types load and compute: F32, F16, the 4/5/8-bit block types and the K-quants,
/// each close to the f32 model in proportion to its bits.
#[test]
fn every_supported_weight_type_loads_and_computes() {
    use candle_core::quantized::GgmlDType as T;
    let shape = |weight_type| TinyConfig {
        hidden: 256,
        heads: 4,
        kv_heads: 2,
        ffn: 512,
        weight_type,
        ..TinyConfig::default()
    };
    let logits = |weight_type| {
        let model = tiny_model(&shape(weight_type));
        let tokens = model.tokenizer.encode("the theme in the thin tin").unwrap();
        let mut cache = model.llama.new_cache();
        model.llama.forward(&tokens, &mut cache).unwrap()
    };
    let reference = logits(T::F32);
    let cosine = |a: &[f32], b: &[f32]| {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64) * (*y as f64))
            .sum();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (norm(a) * norm(b))
    };
    for (weight_type, at_least) in [
        (T::F16, 0.9999),
        (T::Q8_0, 0.999),
        (T::Q6K, 0.995),
        (T::Q5_0, 0.98),
        (T::Q5_1, 0.98),
        (T::Q5K, 0.98),
        (T::Q4_0, 0.93),
        (T::Q4_1, 0.93),
        (T::Q4K, 0.93),
        (T::Q3K, 0.85),
        // Two bits on a random model (no outlier structure to exploit) keeps only the gist.
        (T::Q2K, 0.4),
    ] {
        let got = logits(weight_type);
        assert!(got.iter().all(|x| x.is_finite()), "{weight_type:?}");
        let similarity = cosine(&reference, &got);

        assert!(
            similarity >= at_least,
            "{weight_type:?}: cosine {similarity} to the f32 model (want ≥ {at_least})"
        );
    }
}
