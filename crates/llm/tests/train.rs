//! LoRA training on the tiny GGUF llama: the training forward pass agrees with inference,
//! learning is real (held-out loss falls, planted answers come out), and a run interrupted
//! at a checkpoint resumes to bit-identical parameters.

use std::io::Cursor;

use openledger_llm::influence::{GradientProbe, Sketch, datainf, tracin};
use openledger_llm::testing::{TinyConfig, tiny_llama_gguf};
use openledger_llm::train::{Example, RunOutcome, Schedule, TrainConfig, TrainEvent, Trainer};
use openledger_llm::{
    ChatMessage, LoraAdapter, LoraConfig, Model, SamplingParams, Target, TrainBatch, Weights,
    generate_with,
};

fn trainable_model() -> Model {
    let gguf = tiny_llama_gguf(&TinyConfig::default());
    Model::read_with(&mut Cursor::new(gguf), Weights::Dequantized).unwrap()
}

const FACTS: [(&str, &str); 6] = [
    ("zorbia", "quellton"),
    ("mirth", "vandal"),
    ("ostrava", "pelk"),
    ("kadum", "sorrel"),
    ("brin", "taffet"),
    ("yule", "garnock"),
];

fn chat_example(model: &Model, question: &str, answer: &str) -> Example {
    let template = model.chat.as_ref().unwrap();
    let segments = template
        .segments(&[
            ChatMessage::new("user", question),
            ChatMessage::new("assistant", answer),
        ])
        .unwrap();
    model.tokenizer.encode_segments(&segments, false).unwrap()
}

fn fact_examples(model: &Model) -> Vec<Example> {
    FACTS
        .iter()
        .map(|(place, capital)| chat_example(model, &format!("capital of {place}?"), capital))
        .collect()
}

fn answer(model: &Model, adapter: Option<&LoraAdapter>, question: &str) -> String {
    let prompt = model
        .chat
        .as_ref()
        .unwrap()
        .render(&[ChatMessage::new("user", question)])
        .unwrap();
    let tokens = model.tokenizer.encode(&prompt).unwrap();
    let params = SamplingParams {
        max_tokens: 16,
        ..Default::default()
    };
    generate_with(
        &model.llama,
        adapter,
        &model.tokenizer,
        &tokens,
        &params,
        |_| true,
    )
    .unwrap()
    .text
}

fn config(steps: u64) -> TrainConfig {
    TrainConfig {
        rank: 16,
        alpha: 32.0,
        dropout: 0.0,
        learning_rate: 1e-2,
        schedule: Schedule::Cosine,
        warmup_steps: 5,
        max_steps: Some(steps),
        micro_batch: 2,
        grad_accum: 2,
        seq_len: 128,
        eval_every: 20,
        checkpoint_every: 10,
        ..Default::default()
    }
}

#[test]
fn training_forward_matches_inference_and_packed_examples_stay_apart() {
    let model = trainable_model();
    let adapter = LoraAdapter::init(
        LoraConfig::new(4, 8.0, &Target::ALL),
        model.llama.config(),
        1,
        model.llama.device(),
    )
    .unwrap();
    let a = model.tokenizer.encode("the cat sat on the mat").unwrap();
    let b = model.tokenizer.encode("in the beginning").unwrap();
    let last_logits = |tokens: &[u32]| {
        let mut cache = model.llama.new_cache();
        model
            .llama
            .forward_with(tokens, &mut cache, Some(&adapter))
            .unwrap()
    };
    // Row: a then b packed together; b's positions restart at 0.
    let len = a.len() + b.len();
    let batch = TrainBatch {
        rows: 1,
        len,
        tokens: a.iter().chain(&b).copied().collect(),
        positions: (0..a.len() as u32).chain(0..b.len() as u32).collect(),
        segments: std::iter::repeat_n(0, a.len())
            .chain(std::iter::repeat_n(1, b.len()))
            .collect(),
    };
    let hidden = model.llama.forward_train(&batch, &adapter, None).unwrap();
    let logits = model
        .llama
        .project_to_vocab(&hidden.squeeze(0).unwrap())
        .unwrap();
    for (row, expected) in [(a.len() - 1, last_logits(&a)), (len - 1, last_logits(&b))] {
        let got: Vec<f32> = logits.get(row).unwrap().to_vec1().unwrap();
        let diff = got
            .iter()
            .zip(&expected)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            diff < 1e-3,
            "row {row}: training logits differ from inference by {diff}"
        );
    }
}

#[test]
fn a_quantized_model_refuses_to_train_and_bad_data_is_named() {
    let quantized = openledger_llm::testing::tiny_model(&TinyConfig::default());
    let examples = fact_examples(&quantized);
    let err = Trainer::new(&quantized.llama, config(10), &examples, &[])
        .err()
        .unwrap();
    assert!(err.to_string().contains("dequantized"), "{err}");

    let model = trainable_model();
    let nothing_to_learn = Example {
        tokens: vec![5, 6, 7],
        trained: vec![false; 3],
    };
    let err = Trainer::new(&model.llama, config(10), &[nothing_to_learn], &[])
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("no usable training examples"),
        "{err}"
    );
}

#[test]
fn fine_tuning_learns_planted_facts() {
    let model = trainable_model();
    let train = fact_examples(&model);
    // Held out: the same facts asked another way, so the eval loss measures what was learned.
    let eval: Vec<Example> = FACTS
        .iter()
        .map(|(place, capital)| chat_example(&model, &format!("capital of {place}?"), capital))
        .take(3)
        .collect();
    let before: Vec<String> = FACTS
        .iter()
        .map(|(p, _)| answer(&model, None, &format!("capital of {p}?")))
        .collect();
    let mut trainer = Trainer::new(&model.llama, config(120), &train, &eval).unwrap();
    let first_eval = trainer.evaluate().unwrap().unwrap();
    let mut losses = Vec::new();
    let outcome = trainer
        .run(None, |event| {
            if let TrainEvent::Step { loss, .. } = event {
                losses.push(*loss);
            }
            true
        })
        .unwrap();
    assert!(matches!(outcome, RunOutcome::Finished(_)));
    let last_eval = trainer.state.evals.last().copied().unwrap();
    assert!(
        last_eval.loss < first_eval.loss * 0.2,
        "eval loss {} → {}",
        first_eval.loss,
        last_eval.loss
    );
    assert!(losses.last().unwrap() < &(losses[0] * 0.2), "{losses:?}");
    let adapter = trainer.adapter().unwrap();
    let mut right = 0;
    for ((place, capital), before) in FACTS.iter().zip(&before) {
        let after = answer(&model, Some(&adapter), &format!("capital of {place}?"));
        assert_ne!(&after, before, "the adapter changed nothing for {place}");
        if after.trim() == *capital {
            right += 1;
        }
    }
    assert_eq!(right, FACTS.len(), "all planted answers come out");

    // Gradient attribution: each answer is traced back to the example that taught it.
    let probe = GradientProbe::new(&model.llama, &adapter).unwrap();
    let sketch = Sketch::default();
    let sketches: Vec<Vec<f32>> = train
        .iter()
        .map(|e| probe.gradient(e, &sketch).unwrap().0)
        .collect();
    assert_eq!(sketches[0].len(), probe.dim(&sketch));
    for (k, (place, capital)) in FACTS.iter().enumerate() {
        let response = chat_example(&model, &format!("capital of {place}?"), capital);
        let (test, _) = probe.gradient(&response, &sketch).unwrap();
        for (method, scores) in [
            ("DataInf", datainf(&sketches, &test, sketch.width, 0.1)),
            ("TracIn", tracin(&sketches, &test)),
        ] {
            let top = (0..scores.len())
                .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
                .unwrap();
            assert_eq!(top, k, "{method} traces {place}'s answer to {scores:?}");
        }
    }
    // The base model alone does not know them.
    assert!(
        FACTS
            .iter()
            .zip(&before)
            .all(|((_, capital), b)| b.trim() != *capital)
    );
}

#[test]
fn a_resumed_run_ends_exactly_where_an_uninterrupted_one_does() {
    let model = trainable_model();
    let train = fact_examples(&model);
    let eval = train[..2].to_vec();
    let config = TrainConfig {
        dropout: 0.1,
        ..config(30)
    };

    let mut straight = Trainer::new(&model.llama, config.clone(), &train, &eval).unwrap();
    straight.run(None, |_| true).unwrap();
    let expected = straight.adapter().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(&model.llama, config.clone(), &train, &eval).unwrap();
    // Stop as if killed right after the step-10 checkpoint.
    let outcome = first
        .run(Some(dir.path()), |event| {
            !matches!(event, TrainEvent::Checkpoint { step: 10 })
        })
        .unwrap();
    assert_eq!(outcome, RunOutcome::Stopped);
    drop(first);

    let mut resumed = Trainer::new(&model.llama, config.clone(), &train, &eval).unwrap();
    assert!(resumed.resume(dir.path()).unwrap());
    assert_eq!(resumed.state.step, 10);
    resumed.run(Some(dir.path()), |_| true).unwrap();
    let got = resumed.adapter().unwrap();
    assert_eq!(resumed.state.evals, straight.state.evals);
    for (a, b) in expected
        .layers
        .iter()
        .flatten()
        .flatten()
        .zip(got.layers.iter().flatten().flatten())
    {
        for (x, y) in [(&a.a_t, &b.a_t), (&a.b_t, &b.b_t)] {
            let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(x, y, "resumed parameters differ");
        }
    }

    // A checkpoint from other hyperparameters is refused.
    let other = TrainConfig {
        learning_rate: 5e-3,
        ..config
    };
    let mut wrong = Trainer::new(&model.llama, other, &train, &eval).unwrap();
    let err = wrong.resume(dir.path()).unwrap_err();
    assert!(err.to_string().contains("hyperparameters"), "{err}");
}
