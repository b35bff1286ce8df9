//! Factory jobs end to end on the tiny llama: a job trains on a snapshot's rows and leaves
//! content-addressed artifacts that check out; permissioned datanets need a grant; a job
//! stopped mid-run (shutdown, cancel) resumes to exactly the adapter an uninterrupted run
//! makes; bad specs are refused before any work.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{Address, B256, address};
use openledger_datanet::row::Row;
use openledger_dataservice::service::CreditedRow;
use openledger_factory::artifacts::Manifest;
use openledger_factory::{
    ArtifactStore, Factory, FactoryError, JobSpec, JobStatus, SnapshotMeta, SnapshotSource,
};
use openledger_llm::testing::{TinyConfig, tiny_llama_gguf};
use openledger_llm::train::{Schedule, TrainConfig};
use openledger_llm::{ChatMessage, LoraAdapter, Model, ModelStore, SamplingParams, generate_with};

const OWNER: Address = address!("00000000000000000000000000000000000000aa");
const STRANGER: Address = address!("00000000000000000000000000000000000000bb");
const FACTS: [(&str, &str); 5] = [
    ("zorbia", "quellton"),
    ("mirth", "vandal"),
    ("ostrava", "pelk"),
    ("kadum", "sorrel"),
    ("brin", "taffet"),
];

#[derive(Default)]
struct Memory {
    snapshots: HashMap<u64, (SnapshotMeta, Vec<CreditedRow>)>,
    readers: Mutex<HashSet<(u64, Address)>>,
    blobs: Mutex<HashMap<B256, Vec<u8>>>,
}

impl SnapshotSource for Memory {
    fn snapshot(&self, id: u64) -> Result<SnapshotMeta, FactoryError> {
        self.snapshots
            .get(&id)
            .map(|(m, _)| m.clone())
            .ok_or(FactoryError::UnknownSnapshot(id))
    }
    fn rows(&self, id: u64) -> Result<Vec<CreditedRow>, FactoryError> {
        Ok(self.snapshots[&id].1.clone())
    }
    fn may_read(&self, datanet: u64, who: Address) -> Result<bool, FactoryError> {
        Ok(self.readers.lock().unwrap().contains(&(datanet, who)))
    }
}

impl ArtifactStore for Memory {
    fn put(&self, bytes: Vec<u8>) -> Result<B256, FactoryError> {
        let hash = B256::from(*blake3::hash(&bytes).as_bytes());
        self.blobs.lock().unwrap().insert(hash, bytes);
        Ok(hash)
    }
    fn get(&self, hash: &B256) -> Result<Vec<u8>, FactoryError> {
        self.blobs
            .lock()
            .unwrap()
            .get(hash)
            .cloned()
            .ok_or_else(|| FactoryError::Data(format!("no blob {hash}")))
    }
}

fn credited(row: Row, contribution: u64) -> CreditedRow {
    CreditedRow {
        hash: B256::from(*blake3::hash(row.canonical().as_bytes()).as_bytes()),
        contribution_id: contribution,
        contributor: Address::with_last_byte(contribution as u8),
        row,
    }
}

/// Snapshot 1: public, the planted facts (twice each, so some land in the eval split).
/// Snapshot 2: permissioned (datanet 20). Snapshot 3: nothing to learn.
fn memory() -> Arc<Memory> {
    let facts: Vec<CreditedRow> = FACTS
        .iter()
        .enumerate()
        .flat_map(|(i, (place, capital))| {
            [
                format!("capital of {place}?"),
                format!("what is the capital of {place}?"),
            ]
            .map(|q| {
                credited(
                    Row::InstructionResponse {
                        instruction: q,
                        input: String::new(),
                        response: capital.to_string(),
                    },
                    i as u64 + 1,
                )
            })
        })
        .collect();
    let meta = |id: u64, datanet_id: u64, permissioned: bool| SnapshotMeta {
        id,
        datanet_id,
        root: B256::with_last_byte(id as u8),
        permissioned,
    };
    let mut memory = Memory::default();
    memory
        .snapshots
        .insert(1, (meta(1, 10, false), facts.clone()));
    memory.snapshots.insert(2, (meta(2, 20, true), facts));
    let silent = Row::Chat {
        messages: vec![openledger_datanet::row::Message {
            role: openledger_datanet::row::Role::User,
            content: "hello?".into(),
        }],
    };
    memory
        .snapshots
        .insert(3, (meta(3, 30, false), vec![credited(silent, 9)]));
    Arc::new(memory)
}

fn store_with_tiny_model(dir: &Path) -> ModelStore {
    let gguf = dir.join("tiny.gguf");
    std::fs::write(&gguf, tiny_llama_gguf(&TinyConfig::default())).unwrap();
    let store = ModelStore::new(dir.join("models"));
    store.import(&gguf, "tiny", "test").unwrap();
    store
}

fn spec(snapshot_id: u64, steps: u64) -> JobSpec {
    JobSpec {
        base_model: "tiny".into(),
        datanet_id: None,
        snapshot_id,
        name: Some("capitals".into()),
        train: TrainConfig {
            rank: 16,
            alpha: 32.0,
            dropout: 0.05,
            learning_rate: 1e-2,
            schedule: Schedule::Cosine,
            warmup_steps: 5,
            max_steps: Some(steps),
            micro_batch: 2,
            grad_accum: 2,
            seq_len: 128,
            eval_every: 10,
            checkpoint_every: 5,
            ..Default::default()
        },
        data: Default::default(),
    }
}

fn open(dir: &Path, memory: &Arc<Memory>) -> Factory {
    Factory::open(
        &dir.join("factory"),
        ModelStore::new(dir.join("models")),
        memory.clone(),
        memory.clone(),
    )
    .unwrap()
}

const WAIT: Duration = Duration::from_secs(600);

#[test]
fn a_job_trains_on_a_snapshot_and_leaves_checkable_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    store_with_tiny_model(dir.path());
    let memory = memory();
    let factory = open(dir.path(), &memory);
    let job = factory.create(OWNER, spec(1, 100)).unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    let done = factory.wait(job.id, WAIT).unwrap();
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.error);
    let result = done.result.unwrap();

    // The artifacts are stored under their hashes and say what the adapter is.
    let weights = factory.artifact(&result.adapter_hash).unwrap();
    assert_eq!(
        B256::from(*blake3::hash(&weights).as_bytes()),
        result.adapter_hash
    );
    let manifest: Manifest =
        serde_json::from_slice(&factory.artifact(&result.manifest_hash).unwrap()).unwrap();
    assert_eq!(manifest.adapter.hash, result.adapter_hash);
    assert_eq!(manifest.datanets[0].root, B256::with_last_byte(1));
    assert_eq!(manifest.base_model.hash, result.base_model_hash);
    assert_eq!(manifest.owner, OWNER);
    let rows = String::from_utf8(factory.artifact(&manifest.train_rows_hash).unwrap()).unwrap();
    assert_eq!(rows.lines().count(), manifest.datanets[0].train_rows);
    assert!(manifest.datanets[0].eval_rows > 0, "some rows are held out");
    // The gradient path's store: one sketch per training row, keyed by row and contribution.
    let gradients = manifest
        .gradients
        .as_ref()
        .expect("gradient sketches are stored");
    let store = openledger_llm::influence::GradientStore::decode(
        &factory.artifact(&gradients.hash).unwrap(),
    )
    .unwrap();
    assert_eq!(store.rows.len(), manifest.datanets[0].train_rows);
    let listed: Vec<String> = rows.lines().map(str::to_string).collect();
    for stored in &store.rows {
        assert!(listed.contains(&format!("{:x}", B256::from(stored.row))));
        assert_ne!(stored.contribution_id, 0);
        assert!(stored.gradient.iter().any(|&g| g != 0.0));
    }
    // The span path's index over the same rows: a row's own text attributes to its contribution.
    let index =
        openledger_attribution::Index::open_verified(factory.span_index_dir(job.id)).unwrap();
    assert_eq!(index.num_docs() as usize, manifest.datanets[0].train_rows);
    assert_eq!(index.snapshot_roots(), &[B256::with_last_byte(1).0]);
    let doc = index.doc(0);
    let params = openledger_attribution::SpanParams {
        min_len: 4,
        ..Default::default()
    };
    let found = openledger_attribution::attribute(&index, &index.doc_tokens(0), &params).unwrap();
    let mine = found
        .contributions
        .iter()
        .find(|c| c.contribution_id == doc.contribution_id)
        .expect("the row's own contribution is credited");
    assert!(mine.share_ppm > 0);
    let evaluation = &manifest.evaluation;
    let (base, tuned) = (evaluation.base.unwrap(), evaluation.adapter.unwrap());
    assert!(
        tuned.loss < base.loss * 0.7,
        "held-out loss {} → {}",
        base.loss,
        tuned.loss
    );
    assert!(result.eval_loss_milli > 0);
    assert!(!evaluation.answers.is_empty());

    // The PEFT directory loads and knows the facts.
    let model = Model::load(&dir.path().join("tiny.gguf")).unwrap();
    let adapter = LoraAdapter::load_peft(
        &factory.adapter_dir(job.id),
        model.llama.config(),
        model.llama.device(),
    )
    .unwrap();
    let template = model.chat.as_ref().unwrap();
    let trained: HashSet<&str> = rows.lines().collect();
    let mut asked = 0;
    for (place, capital) in FACTS {
        let question = format!("capital of {place}?");
        let row = Row::InstructionResponse {
            instruction: question.clone(),
            input: String::new(),
            response: capital.to_string(),
        };
        let hash = format!("{:x}", credited(row, 0).hash);
        if !trained.contains(hash.as_str()) {
            continue; // held out
        }
        asked += 1;
        let prompt = template
            .render(&[ChatMessage::new("user", &question)])
            .unwrap();
        let tokens = model.tokenizer.encode(&prompt).unwrap();
        let params = SamplingParams {
            max_tokens: 12,
            ..Default::default()
        };
        let answer = generate_with(
            &model.llama,
            Some(&adapter),
            &model.tokenizer,
            &tokens,
            &params,
            |_| true,
        )
        .unwrap();
        assert_eq!(
            answer.text.trim(),
            capital,
            "the planted answer for {place}"
        );
    }
    assert!(asked >= 3, "most facts were trained on");

    // The event log tells the story in order.
    let history = factory.history(job.id).unwrap();
    let kinds: Vec<&str> = history
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"status"));
    assert!(kinds.contains(&"step") && kinds.contains(&"eval") && kinds.contains(&"checkpoint"));
    assert_eq!(history.last().unwrap()["status"], "completed");
    let seqs: Vec<u64> = history.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    factory.shutdown();
}

#[test]
fn stopped_jobs_resume_to_the_same_adapter_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    store_with_tiny_model(dir.path());
    let memory = memory();
    let factory = open(dir.path(), &memory);
    let straight = factory.create(OWNER, spec(1, 40)).unwrap();
    let expected = factory.wait(straight.id, WAIT).unwrap().result.unwrap();

    // Stop the node mid-run: the job goes back to the queue and continues after a restart.
    let interrupted = factory.create(OWNER, spec(1, 40)).unwrap();
    wait_for_step(&factory, interrupted.id, 12);
    factory.shutdown();
    let record = factory.get(interrupted.id).unwrap();
    assert_eq!(record.status, JobStatus::Queued);
    let stopped_at = record.progress.unwrap().step;
    assert!(stopped_at < 40, "stopped before the end ({stopped_at})");
    let factory = open(dir.path(), &memory);
    let done = factory.wait(interrupted.id, WAIT).unwrap();
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.error);
    let history = factory.history(interrupted.id).unwrap();
    assert!(history.iter().any(|e| e["kind"] == "resumed"));
    assert_eq!(done.result.unwrap().adapter_hash, expected.adapter_hash);

    // Cancel, then resume: the same again.
    let cancelled = factory.create(OWNER, spec(1, 40)).unwrap();
    wait_for_step(&factory, cancelled.id, 8);
    let err = factory.cancel(cancelled.id, STRANGER).unwrap_err();
    assert!(matches!(err, FactoryError::NotOwner { .. }));
    factory.cancel(cancelled.id, OWNER).unwrap();
    let record = factory.wait(cancelled.id, WAIT).unwrap();
    assert_eq!(record.status, JobStatus::Cancelled);
    factory.resume(cancelled.id, OWNER).unwrap();
    let done = factory.wait(cancelled.id, WAIT).unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.result.unwrap().adapter_hash, expected.adapter_hash);
    let err = factory.resume(cancelled.id, OWNER).unwrap_err();
    assert!(err.to_string().contains("completed"), "{err}");
    factory.shutdown();
}

fn wait_for_step(factory: &Factory, id: u64, step: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    while factory
        .get(id)
        .unwrap()
        .progress
        .is_none_or(|p| p.step < step)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} never reached step {step}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_specs_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    store_with_tiny_model(dir.path());
    let memory = memory();
    let factory = open(dir.path(), &memory);
    let refuse = |spec: JobSpec, who: Address, needle: &str| {
        let err = factory.create(who, spec).unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    };
    refuse(spec(99, 10), OWNER, "no published snapshot 99");
    refuse(
        JobSpec {
            datanet_id: Some(20),
            ..spec(1, 10)
        },
        OWNER,
        "belongs to datanet 10, not 20",
    );
    refuse(
        JobSpec {
            base_model: "gpt-17".into(),
            ..spec(1, 10)
        },
        OWNER,
        "openledger model pull gpt-17",
    );
    let mut bad = spec(1, 10);
    bad.train.rank = 0;
    refuse(bad, OWNER, "rank");
    let mut bad = spec(1, 10);
    bad.train.seq_len = 100_000;
    refuse(bad, OWNER, "seq_len");
    let mut bad = spec(1, 10);
    bad.data.eval_fraction = 0.9;
    refuse(bad, OWNER, "eval_fraction");

    // Permissioned: only with a grant.
    refuse(spec(2, 10), STRANGER, "no unexpired grant");
    memory.readers.lock().unwrap().insert((20, STRANGER));
    let job = factory.create(STRANGER, spec(2, 2)).unwrap();
    assert_eq!(
        factory.wait(job.id, WAIT).unwrap().status,
        JobStatus::Completed
    );

    // Nothing to learn: the job fails and says why.
    let job = factory.create(OWNER, spec(3, 10)).unwrap();
    let failed = factory.wait(job.id, WAIT).unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(
        failed.error.unwrap().contains("no usable training rows"),
        "a clear reason"
    );
    assert!(factory.list().len() >= 2);
    factory.shutdown();
}
