//! How well attribution finds the rows that taught a fine-tune its answers, on ground truth:
//! a tiny llama fine-tuned on a datanet where each of twelve contributors holds facts no one
//! else has, plus a few mislabeled rows. Prints the figures (the closing notes quote them) and
//! holds each path to a floor far above chance (1/12 for top-1).
//!
//! - Planted facts: for each fact, is the contributor who planted it the top-1 (and in the
//!   top-5) by the span path, the gradient path (DataInf), and both combined?
//! - Mislabeled rows: what share of them rank in the top 10% by self-influence (at an early
//!   checkpoint)?
//! - Leave-one-out: retraining without a row, how much does each fact's loss rise; Spearman
//!   correlation of that with the DataInf and TracIn predictions.

use std::io::Cursor;

use openledger_attribution::{BuildConfig, Document, Index, SpanParams, Vocab, build_index};
use openledger_factory::attribution::clusters;
use openledger_llm::influence::{GradientProbe, Sketch, datainf, self_influence, tracin};
use openledger_llm::testing::{TinyConfig, tiny_llama_gguf};
use openledger_llm::train::{Example, Schedule, TrainConfig, Trainer};
use openledger_llm::{ChatMessage, LoraAdapter, Model, Weights};

const CONTRIBUTORS: usize = 12;
const FACTS_EACH: usize = 3;
const SYLLABLES: [&str; 16] = [
    "ka", "lo", "mi", "ru", "te", "zan", "vo", "qui", "bel", "dor", "fen", "gra", "hul", "jix",
    "nor", "pel",
];

/// A made-up word, the same for the same seed.
fn word(seed: usize) -> String {
    let mut s = seed.wrapping_mul(2_654_435_761) ^ 0x5bd1;
    let mut w = String::new();
    for _ in 0..3 {
        w.push_str(SYLLABLES[s % SYLLABLES.len()]);
        s /= SYLLABLES.len();
        s = s.wrapping_mul(40_503) ^ 0x9e37;
    }
    w
}

struct Row {
    contributor: usize,
    question: String,
    answer: String,
    poisoned: bool,
}

fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for c in 0..CONTRIBUTORS {
        for f in 0..FACTS_EACH {
            let k = c * FACTS_EACH + f;
            rows.push(Row {
                contributor: c,
                question: format!("where is {}?", word(k)),
                answer: format!(
                    "{} lies past {} near {}",
                    word(k),
                    word(100 + k),
                    word(200 + k)
                ),
                poisoned: false,
            });
        }
    }
    // Mislabeled rows from one more account: questions answered with noise.
    for p in 0..4 {
        rows.push(Row {
            contributor: CONTRIBUTORS,
            question: format!("where is {}?", word(300 + p)),
            answer: format!(
                "{} {} {} {}",
                word(400 + p),
                word(500 + p),
                word(600 + p),
                word(700 + p)
            ),
            poisoned: true,
        });
    }
    rows
}

fn model() -> Model {
    let gguf = tiny_llama_gguf(&TinyConfig::default());
    Model::read_with(&mut Cursor::new(gguf), Weights::Dequantized).unwrap()
}

fn example(model: &Model, question: &str, answer: &str) -> Example {
    let segments = model
        .chat
        .as_ref()
        .unwrap()
        .segments(&[
            ChatMessage::new("user", question),
            ChatMessage::new("assistant", answer),
        ])
        .unwrap();
    model.tokenizer.encode_segments(&segments, false).unwrap()
}

fn train(model: &Model, examples: &[Example], steps: u64) -> LoraAdapter {
    let config = TrainConfig {
        rank: 16,
        alpha: 32.0,
        dropout: 0.0,
        learning_rate: 1e-2,
        schedule: Schedule::Cosine,
        warmup_steps: 5,
        max_steps: Some(steps),
        micro_batch: 4,
        grad_accum: 1,
        seq_len: 128,
        eval_every: 1_000,
        checkpoint_every: 1_000,
        ..Default::default()
    };
    let mut trainer = Trainer::new(&model.llama, config, examples, &[]).unwrap();
    trainer.run(None, |_| true).unwrap();
    trainer.adapter().unwrap()
}

/// Contributors ranked by summed positive score, best first (ties by lower id).
fn rank(scores: &[(usize, f64)]) -> Vec<usize> {
    let mut by = [0f64; CONTRIBUTORS + 1];
    for &(c, s) in scores {
        by[c] += s.max(0.0);
    }
    let mut order: Vec<usize> = (0..by.len()).collect();
    order.sort_by(|&a, &b| by[b].total_cmp(&by[a]).then(a.cmp(&b)));
    order
}

/// Shares (summing to 1 when anything scored) from per-contributor scores.
fn normalised(scores: &[(usize, f64)]) -> Vec<f64> {
    let mut by = vec![0f64; CONTRIBUTORS + 1];
    for &(c, s) in scores {
        by[c] += s.max(0.0);
    }
    let total: f64 = by.iter().sum();
    if total > 0.0 {
        by.iter_mut().for_each(|v| *v /= total);
    }
    by
}

fn spearman(a: &[f64], b: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&x, &y| v[x].total_cmp(&v[y]));
        let mut r = vec![0f64; v.len()];
        for (rank, &i) in idx.iter().enumerate() {
            r[i] = rank as f64;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let mean = (n - 1.0) / 2.0;
    let cov: f64 = ra
        .iter()
        .zip(&rb)
        .map(|(x, y)| (x - mean) * (y - mean))
        .sum();
    let var: f64 = ra.iter().map(|x| (x - mean).powi(2)).sum();
    cov / var
}

#[test]
fn attribution_finds_who_taught_an_answer_and_flags_mislabeled_rows() {
    let model = model();
    let rows = rows();
    let examples: Vec<Example> = rows
        .iter()
        .map(|r| example(&model, &r.question, &r.answer))
        .collect();
    let adapter = train(&model, &examples, 200);

    // Span path: an index over the rows, each credited to its contributor.
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {}", r.question, r.answer))
        .collect();
    let docs = examples
        .iter()
        .zip(&rows)
        .zip(clusters(&texts))
        .enumerate()
        .map(|(i, ((e, r), cluster_id))| Document {
            row_id: i as u64,
            contribution_id: r.contributor as u64 + 1,
            contributor: [r.contributor as u8 + 1; 20],
            cluster_id,
            tokens: e.tokens.clone(),
        });
    let mut config = BuildConfig::new(
        Vocab::Tokens {
            size: model.tokenizer.vocab_size() as u32,
        },
        vec![[1; 32]],
    );
    config.progress = false;
    build_index(dir.path(), &config, docs).unwrap();
    let index = Index::open_verified(dir.path()).unwrap();
    let params = SpanParams {
        min_len: 4,
        ..Default::default()
    };

    // Gradient path: every row's sketch under the final adapter.
    let probe = GradientProbe::new(&model.llama, &adapter).unwrap();
    let sketch = Sketch::default();
    let sketches: Vec<Vec<f32>> = examples
        .iter()
        .map(|e| probe.gradient(e, &sketch).unwrap().0)
        .collect();

    let facts: Vec<usize> = (0..rows.len()).filter(|&i| !rows[i].poisoned).collect();
    let (mut span_hits, mut grad_hits, mut both_hits) = ([0; 2], [0; 2], [0; 2]);
    for &i in &facts {
        let row = &rows[i];
        let response = model.tokenizer.encode(&row.answer).unwrap();
        let span = openledger_attribution::attribute(&index, &response, &params).unwrap();
        let span_scores: Vec<(usize, f64)> = span
            .contributions
            .iter()
            .map(|c| ((c.contribution_id - 1) as usize, c.share_ppm as f64))
            .collect();
        let (test, _) = probe.gradient(&examples[i], &sketch).unwrap();
        let grad_scores: Vec<(usize, f64)> = datainf(&sketches, &test, sketch.width, 0.1)
            .into_iter()
            .enumerate()
            .map(|(j, s)| (rows[j].contributor, s))
            .collect();
        let combined: Vec<(usize, f64)> = normalised(&span_scores)
            .into_iter()
            .zip(normalised(&grad_scores))
            .enumerate()
            .map(|(c, (a, b))| (c, (a + b) / 2.0))
            .collect();
        for (hits, scores) in [
            (&mut span_hits, &span_scores),
            (&mut grad_hits, &grad_scores),
            (&mut both_hits, &combined),
        ] {
            let order = rank(scores);
            hits[0] += (order[0] == row.contributor) as usize;
            hits[1] += order[..5].contains(&row.contributor) as usize;
        }
    }
    let n = facts.len() as f64;
    let rate = |h: [usize; 2]| (h[0] as f64 / n, h[1] as f64 / n);
    let (span, grad, both) = (rate(span_hits), rate(grad_hits), rate(both_hits));
    eprintln!(
        "planted facts ({} facts, {CONTRIBUTORS} contributors):",
        facts.len()
    );
    eprintln!("  span path      top-1 {:.2}  top-5 {:.2}", span.0, span.1);
    eprintln!("  gradient path  top-1 {:.2}  top-5 {:.2}", grad.0, grad.1);
    eprintln!("  combined       top-1 {:.2}  top-5 {:.2}", both.0, both.1);

    // Mislabeled rows by self-influence. Once the adapter has memorised everything, noise
    // included, every gradient is small; early in training (TracIn's early checkpoint) the
    // rows that contradict what the model can generalise still pull hardest.
    let early = train(&model, &examples, 40);
    let early_probe = GradientProbe::new(&model.llama, &early).unwrap();
    let early_sketches: Vec<Vec<f32>> = examples
        .iter()
        .map(|e| early_probe.gradient(e, &sketch).unwrap().0)
        .collect();
    let self_scores = self_influence(&early_sketches);
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| self_scores[b].total_cmp(&self_scores[a]).then(a.cmp(&b)));
    let top = rows.len().div_ceil(10);
    let poisoned = rows.iter().filter(|r| r.poisoned).count();
    let caught = order[..top].iter().filter(|&&i| rows[i].poisoned).count();
    let detection = caught as f64 / poisoned.min(top) as f64;
    eprintln!(
        "  mislabeled rows in the top 10% by self-influence: {caught} of {poisoned} ({detection:.2} of what fits)"
    );

    // Chance is 1/12 for top-1 and 5/12 for top-5.
    assert!(span.0 >= 0.9 && span.1 >= 0.95, "span path {span:?}");
    assert!(grad.0 >= 0.5 && grad.1 >= 0.8, "gradient path {grad:?}");
    assert!(both.0 >= 0.9, "combined {both:?}");
    assert!(
        detection >= 0.5,
        "self-influence caught {caught} of {poisoned}"
    );
}

#[test]
fn influence_predicts_leave_one_out_retraining() {
    let model = model();
    let rows: Vec<Row> = rows().into_iter().filter(|r| !r.poisoned).take(8).collect();
    let examples: Vec<Example> = rows
        .iter()
        .map(|r| example(&model, &r.question, &r.answer))
        .collect();
    let steps = 100;
    let full = train(&model, &examples, steps);
    let loss = |adapter: &LoraAdapter, e: &Example| {
        GradientProbe::new(&model.llama, adapter)
            .unwrap()
            .gradient(e, &Sketch::default())
            .unwrap()
            .1 as f64
    };
    let base: Vec<f64> = examples.iter().map(|e| loss(&full, e)).collect();
    let probe = GradientProbe::new(&model.llama, &full).unwrap();
    let sketch = Sketch::default();
    let sketches: Vec<Vec<f32>> = examples
        .iter()
        .map(|e| probe.gradient(e, &sketch).unwrap().0)
        .collect();
    // Pairs (left-out row i, test fact j): actual loss rise vs predicted influence.
    let (mut actual, mut by_datainf, mut by_tracin) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..examples.len() {
        let kept: Vec<Example> = examples
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, e)| e.clone())
            .collect();
        let without = train(&model, &kept, steps);
        for j in 0..examples.len() {
            let (test, _) = probe.gradient(&examples[j], &sketch).unwrap();
            actual.push(loss(&without, &examples[j]) - base[j]);
            by_datainf.push(datainf(&sketches, &test, sketch.width, 0.1)[i]);
            by_tracin.push(tracin(&sketches, &test)[i]);
        }
    }
    let (rho_datainf, rho_tracin) = (
        spearman(&by_datainf, &actual),
        spearman(&by_tracin, &actual),
    );
    eprintln!(
        "leave-one-out ({} rows, {} pairs): Spearman DataInf {rho_datainf:.2}, TracIn {rho_tracin:.2}",
        examples.len(),
        actual.len()
    );
    // With 64 pairs, |ρ| under no relation stays below ≈ 0.13 two times in three; retraining
    // noise (another data order without the row) bounds what any predictor can reach here.
    assert!(rho_datainf > 0.15, "DataInf ρ = {rho_datainf}");
    assert!(rho_tracin > 0.15, "TracIn ρ = {rho_tracin}");
}
