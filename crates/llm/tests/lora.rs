//! LoRA adapters on the tiny GGUF llama: PEFT-style initialisation is a no-op, a trained
//! adapter changes the output, and the PEFT files round-trip exactly (keys, shapes, q/k order).

use candle_core::{Device, Tensor};
use openledger_llm::testing::{TinyConfig, tiny_model};
use openledger_llm::{LlmError, LoraAdapter, LoraConfig, Target};

fn logits(model: &openledger_llm::Model, adapter: Option<&LoraAdapter>) -> Vec<f32> {
    let tokens = model.tokenizer.encode("the quick brown fox").unwrap();
    let mut cache = model.llama.new_cache();
    model
        .llama
        .forward_with(&tokens, &mut cache, adapter)
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// An adapter with random B as well, as after training.
fn trained(model: &openledger_llm::Model, targets: &[Target]) -> LoraAdapter {
    let config = LoraConfig::new(4, 8.0, targets);
    let mut adapter = LoraAdapter::init(config, model.llama.config(), 5, &Device::Cpu).unwrap();
    let mut seed = 1.0f32;
    for pairs in adapter.layers.iter_mut() {
        for pair in pairs.iter_mut().flatten() {
            let (r, out) = pair.b_t.dims2().unwrap();
            let values: Vec<f32> = (0..r * out)
                .map(|i| {
                    seed += 1.0;
                    (seed * 12.9898 + i as f32).sin() * 0.05
                })
                .collect();
            pair.b_t = Tensor::from_vec(values, (r, out), &Device::Cpu).unwrap();
        }
    }
    adapter
}

#[test]
fn a_fresh_adapter_changes_nothing_and_a_trained_one_does() {
    let model = tiny_model(&TinyConfig::default());
    let base = logits(&model, None);
    let fresh = LoraAdapter::init(
        LoraConfig::new(8, 16.0, &Target::ALL),
        model.llama.config(),
        3,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(max_diff(&base, &logits(&model, Some(&fresh))), 0.0);
    let adapted = logits(&model, Some(&trained(&model, &Target::ALL)));
    assert!(
        max_diff(&base, &adapted) > 1e-3,
        "the adapter had no effect"
    );
}

#[test]
fn peft_files_round_trip_with_peft_names_and_shapes() {
    let model = tiny_model(&TinyConfig::default());
    let c = model.llama.config().clone();
    let adapter = trained(&model, &[Target::Q, Target::K, Target::V, Target::Down]);
    let dir = tempfile::tempdir().unwrap();
    adapter.save_peft(dir.path(), &c).unwrap();

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["target_modules"][0], "q_proj");
    let tensors =
        candle_core::safetensors::load(dir.path().join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    let a = &tensors["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"];
    let b = &tensors["base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"];
    assert_eq!(a.dims(), [4, c.hidden_size]);
    assert_eq!(b.dims(), [c.num_kv_heads * c.head_dim, 4]);
    assert!(tensors.contains_key("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"));
    assert!(!tensors.keys().any(|k| k.contains("o_proj")));

    let loaded = LoraAdapter::load_peft(dir.path(), &c, &Device::Cpu).unwrap();
    assert_eq!(
        max_diff(
            &logits(&model, Some(&adapter)),
            &logits(&model, Some(&loaded))
        ),
        0.0,
        "a saved and reloaded adapter computes the same"
    );
}

#[test]
fn adapters_for_another_base_or_broken_files_are_refused() {
    let model = tiny_model(&TinyConfig::default());
    let other = tiny_model(&TinyConfig {
        hidden: 32,
        heads: 2,
        kv_heads: 1,
        ffn: 64,
        ..TinyConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    trained(&other, &[Target::Q])
        .save_peft(dir.path(), other.llama.config())
        .unwrap();
    let err = LoraAdapter::load_peft(dir.path(), model.llama.config(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("do not fit this model"), "{err}");

    std::fs::write(
        dir.path().join("adapter_model.safetensors"),
        b"not safetensors",
    )
    .unwrap();
    let err = LoraAdapter::load_peft(dir.path(), model.llama.config(), &Device::Cpu).unwrap_err();
    assert!(matches!(err, LlmError::BadModel(_)), "{err}");

    std::fs::write(
        dir.path().join("adapter_config.json"),
        br#"{"peft_type":"LORA","r":4,"lora_alpha":8,"target_modules":["lm_head"]}"#,
    )
    .unwrap();
    let err = LoraAdapter::load_peft(dir.path(), model.llama.config(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("lm_head"), "{err}");
}

/// Sequences of different lengths, cache states and adapters (two sharing one, one without)
/// run as one batch give each the logits — and afterwards the caches — it gets alone.
#[test]
fn a_batch_of_sequences_with_different_adapters_matches_each_alone() {
    use openledger_llm::model::Step;
    let model = tiny_model(&TinyConfig::default());
    let llama = &model.llama;
    let a = trained(&model, &[Target::Q, Target::V]);
    let b = {
        let config = LoraConfig::new(8, 4.0, &Target::ALL);
        let mut adapter = LoraAdapter::init(config, llama.config(), 9, &Device::Cpu).unwrap();
        for pair in adapter.layers.iter_mut().flatten().flatten() {
            let (r, out) = pair.b_t.dims2().unwrap();
            let values: Vec<f32> = (0..r * out)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01)
                .collect();
            pair.b_t = Tensor::from_vec(values, (r, out), &Device::Cpu).unwrap();
        }
        adapter
    };
    let tok = |s: &str| model.tokenizer.encode(s).unwrap();
    // Sequence 2 already has a history in its cache.
    let mut warm = llama.new_cache();
    llama
        .forward_with(&tok("once upon"), &mut warm, Some(&b))
        .unwrap();
    let inputs: Vec<(Vec<u32>, openledger_llm::KvCache, Option<&LoraAdapter>)> = vec![
        (tok("the quick brown"), llama.new_cache(), Some(&a)),
        (tok(" a"), warm, Some(&b)),
        (tok("in the beginning"), llama.new_cache(), None),
        (tok("to be"), llama.new_cache(), Some(&a)),
    ];
    let mut alone_caches: Vec<_> = inputs.iter().map(|(_, c, _)| c.clone()).collect();
    let alone: Vec<Vec<f32>> = inputs
        .iter()
        .zip(alone_caches.iter_mut())
        .map(|((tokens, _, adapter), cache)| llama.forward_with(tokens, cache, *adapter).unwrap())
        .collect();
    let mut batch_caches: Vec<_> = inputs.iter().map(|(_, c, _)| c.clone()).collect();
    let mut steps: Vec<Step> = inputs
        .iter()
        .zip(batch_caches.iter_mut())
        .map(|((tokens, _, adapter), cache)| Step {
            tokens,
            cache,
            adapter: *adapter,
        })
        .collect();
    let batched = llama.forward_batch(&mut steps).unwrap();
    for (i, (x, y)) in alone.iter().zip(&batched).enumerate() {
        assert!(max_diff(x, y) < 1e-4, "sequence {i}: {}", max_diff(x, y));
    }
    // Greedy continuation, batched step by step, equals each sequence decoded alone.
    let mut next: Vec<u32> = batched
        .iter()
        .map(|l| openledger_llm::model::argmax(l))
        .collect();
    let mut alone_next: Vec<u32> = alone
        .iter()
        .map(|l| openledger_llm::model::argmax(l))
        .collect();
    assert_eq!(next, alone_next);
    for _ in 0..8 {
        let tokens: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let mut steps: Vec<Step> = tokens
            .iter()
            .zip(batch_caches.iter_mut())
            .zip(&inputs)
            .map(|((t, cache), (_, _, adapter))| Step {
                tokens: t,
                cache,
                adapter: *adapter,
            })
            .collect();
        next = llama
            .forward_batch(&mut steps)
            .unwrap()
            .iter()
            .map(|l| openledger_llm::model::argmax(l))
            .collect();
        alone_next = alone_next
            .iter()
            .zip(alone_caches.iter_mut())
            .zip(&inputs)
            .map(|((&t, cache), (_, _, adapter))| {
                openledger_llm::model::argmax(&llama.forward_with(&[t], cache, *adapter).unwrap())
            })
            .collect();
        assert_eq!(next, alone_next);
    }
    assert_eq!(
        batch_caches.iter().map(|c| c.len()).collect::<Vec<_>>(),
        alone_caches.iter().map(|c| c.len()).collect::<Vec<_>>()
    );
}

/// An adapter merged into the base GGUF gives, with no adapter, what base + adapter gives:
/// exactly when stored as f32, closely as Q8_0; llama.cpp-style tools load it as any GGUF.
#[test]
fn a_merged_model_answers_like_base_plus_adapter() {
    use openledger_llm::merge::{MergedWeights, merge_into_gguf};
    use openledger_llm::testing::tiny_llama_gguf;
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join("base.gguf");
    std::fs::write(&base_path, tiny_llama_gguf(&TinyConfig::default())).unwrap();
    let base =
        openledger_llm::Model::load_with(&base_path, openledger_llm::Weights::Dequantized).unwrap();
    let adapter = trained(&base, &[Target::Q, Target::K, Target::Down]);
    let expected = logits(&base, Some(&adapter));
    assert!(max_diff(&expected, &logits(&base, None)) > 1e-3);

    let exact = dir.path().join("merged-f32.gguf");
    let merged = merge_into_gguf(&base_path, &adapter, &exact, MergedWeights::F32).unwrap();
    assert_eq!(merged, 3 * TinyConfig::default().layers);
    let model =
        openledger_llm::Model::load_with(&exact, openledger_llm::Weights::Dequantized).unwrap();
    assert!(max_diff(&expected, &logits(&model, None)) < 1e-4);

    let small = dir.path().join("merged-q8.gguf");
    merge_into_gguf(&base_path, &adapter, &small, MergedWeights::Q8_0).unwrap();
    let model =
        openledger_llm::Model::load_with(&small, openledger_llm::Weights::Dequantized).unwrap();
    let diff = max_diff(&expected, &logits(&model, None));
    assert!(diff < 0.05, "Q8_0 merge drifted by {diff}");
    assert!(std::fs::metadata(&small).unwrap().len() < std::fs::metadata(&exact).unwrap().len());

    // An adapter for another shape of model is refused.
    let other = tiny_model(&TinyConfig {
        layers: 3,
        ..TinyConfig::default()
    });
    let foreign = trained(&other, &[Target::Q]);
    let err = merge_into_gguf(
        &base_path,
        &foreign,
        &dir.path().join("x.gguf"),
        MergedWeights::F32,
    )
    .unwrap_err();
    assert!(err.to_string().contains("another base"), "{err}");
}
