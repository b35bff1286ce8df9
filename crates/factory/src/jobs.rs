//! The job queue. Jobs run one at a time on a worker thread (training already uses every
//! core); each lives in `<root>/jobs/<id>/`:
//!
//! ```text
//! job.json        the record (spec, status, progress, result), replaced atomically
//! events.jsonl    every event the job emitted, in order (what a reconnecting client replays)
//! checkpoints/    the trainer's latest checkpoint (see `openledger_llm::train`)
//! adapter/        the finished adapter as a PEFT directory
//! ```
//!
//! A job never depends on a client staying connected. After a restart — clean or `kill -9` —
//! jobs that were queued or running are queued again and running ones continue from their
//! last checkpoint, ending with the result an uninterrupted run would have had.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::{Address, B256};
use openledger_llm::influence::{GradientProbe, GradientStore, Sketch, StoredGradient};
use openledger_llm::train::{EvalPoint, RunOutcome, TrainConfig, TrainEvent, Trainer};
use openledger_llm::{LoraAdapter, Model, ModelStore, SamplingParams, Weights, generate_with};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::artifacts::{
    self, AdapterRef, Answer, BaseModelRef, Evaluation, GradientsRef, LossFigures, MANIFEST_FORMAT,
    Manifest, SnapshotRef, TrainingSummary,
};
use crate::examples::{DataOptions, Dataset, build_dataset};
use crate::source::{ArtifactStore, SnapshotSource};
use crate::{FactoryError, io_error};

fn default_base_model() -> String {
    openledger_llm::DEFAULT_MODEL.to_string()
}

/// What to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// A model-store name or hash.
    #[serde(default = "default_base_model")]
    pub base_model: String,
    /// When given, the snapshot must belong to this datanet.
    #[serde(default)]
    pub datanet_id: Option<u64>,
    pub snapshot_id: u64,
    /// The fine-tune's name (what `publishModel` will call it).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub data: DataOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The latest step of a running job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: f64,
    pub loss: f64,
    pub learning_rate: f64,
    pub tokens_per_second: f64,
    pub eta_seconds: f64,
}

/// What a completed job produced, ready for `publishModel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub adapter_hash: B256,
    pub manifest_hash: B256,
    pub hyperparams_hash: B256,
    pub base_model_hash: B256,
    pub snapshot_ids: Vec<u64>,
    pub eval_loss_milli: u64,
    pub eval_perplexity_milli: u64,
    pub evaluation: Evaluation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: u64,
    pub owner: Address,
    pub name: String,
    pub spec: JobSpec,
    pub status: JobStatus,
    pub created_at: u64,
    pub updated_at: u64,
    pub datanet_id: u64,
    pub snapshot_root: B256,
    #[serde(default)]
    pub progress: Option<Progress>,
    #[serde(default)]
    pub evals: Vec<EvalPoint>,
    /// Seconds spent training, over every attempt.
    #[serde(default)]
    pub train_seconds: f64,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub result: Option<JobResult>,
}

/// One event of one job, as streamed to clients and kept in `events.jsonl`.
pub type JobEvent = Arc<Value>;

struct State {
    jobs: BTreeMap<u64, JobRecord>,
    queue: VecDeque<u64>,
    cancel: HashSet<u64>,
    shutdown: bool,
    /// Sequence number of the next event, per job.
    next_event: BTreeMap<u64, u64>,
}

struct Inner {
    root: PathBuf,
    models: ModelStore,
    source: Arc<dyn SnapshotSource>,
    artifacts: Arc<dyn ArtifactStore>,
    state: Mutex<State>,
    wake: Condvar,
    events: broadcast::Sender<JobEvent>,
}

/// The factory: a handle to the queue and its worker. Cheap to clone.
#[derive(Clone)]
pub struct Factory {
    inner: Arc<Inner>,
    worker: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FactoryError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!("{name}.partial"));
    let mut file = std::fs::File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

impl Factory {
    /// Opens the factory under `root`, requeues unfinished jobs and starts the worker.
    pub fn open(
        root: &Path,
        models: ModelStore,
        source: Arc<dyn SnapshotSource>,
        artifacts: Arc<dyn ArtifactStore>,
    ) -> Result<Self, FactoryError> {
        let jobs_dir = root.join("jobs");
        std::fs::create_dir_all(&jobs_dir).map_err(io_error(&jobs_dir))?;
        let mut jobs = BTreeMap::new();
        let mut next_event = BTreeMap::new();
        for entry in std::fs::read_dir(&jobs_dir).map_err(io_error(&jobs_dir))? {
            let dir = entry.map_err(io_error(&jobs_dir))?.path();
            let path = dir.join("job.json");
            let Ok(bytes) = std::fs::read(&path) else {
                continue; // a job directory whose record was never written: nothing to resume
            };
            let record: JobRecord = serde_json::from_slice(&bytes).map_err(|e| {
                FactoryError::BadRequest(format!("{}: unreadable job record: {e}", path.display()))
            })?;
            let events = std::fs::read_to_string(dir.join("events.jsonl"))
                .map(|t| t.lines().count() as u64)
                .unwrap_or(0);
            next_event.insert(record.id, events);
            jobs.insert(record.id, record);
        }
        // Oldest first, so the queue order survives restarts.
        let queue: VecDeque<u64> = jobs
            .values()
            .filter(|j| matches!(j.status, JobStatus::Queued | JobStatus::Running))
            .map(|j| j.id)
            .collect();
        for id in &queue {
            if let Some(job) = jobs.get_mut(id) {
                job.status = JobStatus::Queued;
            }
        }
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            root: root.to_path_buf(),
            models,
            source,
            artifacts,
            state: Mutex::new(State {
                jobs,
                queue,
                cancel: HashSet::new(),
                shutdown: false,
                next_event,
            }),
            wake: Condvar::new(),
            events,
        });
        let worker_inner = inner.clone();
        let worker = std::thread::Builder::new()
            .name("factory-worker".into())
            .spawn(move || worker_inner.work())
            .map_err(io_error(root))?;
        Ok(Self {
            inner,
            worker: Arc::new(Mutex::new(Some(worker))),
        })
    }

    /// Checks and queues a job for `owner`. Everything that can be checked before training
    /// is: the snapshot exists and `owner` may read it, the base model is installed, the
    /// hyperparameters are in range for it.
    pub fn create(&self, owner: Address, spec: JobSpec) -> Result<JobRecord, FactoryError> {
        spec.data.validate()?;
        let snapshot = self.inner.source.snapshot(spec.snapshot_id)?;
        if let Some(datanet) = spec.datanet_id
            && datanet != snapshot.datanet_id
        {
            return Err(FactoryError::BadRequest(format!(
                "snapshot {} belongs to datanet {}, not {datanet}",
                snapshot.id, snapshot.datanet_id
            )));
        }
        if snapshot.permissioned && !self.inner.source.may_read(snapshot.datanet_id, owner)? {
            return Err(FactoryError::NoGrant {
                datanet: snapshot.datanet_id,
                who: owner,
            });
        }
        let (_, path) = self
            .inner
            .models
            .find(&spec.base_model)?
            .ok_or_else(|| FactoryError::UnknownBaseModel(spec.base_model.clone()))?;
        let config = Model::inspect(&path)?;
        spec.train.validate(config.context_length)?;
        let mut state = self.inner.lock();
        let id = state.jobs.keys().next_back().map_or(1, |last| last + 1);
        let time = now();
        let record = JobRecord {
            id,
            owner,
            name: spec.name.clone().unwrap_or_else(|| format!("job-{id}")),
            spec,
            status: JobStatus::Queued,
            created_at: time,
            updated_at: time,
            datanet_id: snapshot.datanet_id,
            snapshot_root: snapshot.root,
            progress: None,
            evals: Vec::new(),
            train_seconds: 0.0,
            error: None,
            result: None,
        };
        let dir = self.inner.job_dir(id);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        self.inner.persist(&record)?;
        state.jobs.insert(id, record.clone());
        state.queue.push_back(id);
        self.inner.emit(
            &mut state,
            id,
            json!({"kind": "status", "status": "queued"}),
        );
        self.inner.wake.notify_all();
        Ok(record)
    }

    pub fn list(&self) -> Vec<JobRecord> {
        self.inner.lock().jobs.values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Result<JobRecord, FactoryError> {
        self.inner
            .lock()
            .jobs
            .get(&id)
            .cloned()
            .ok_or(FactoryError::UnknownJob(id))
    }

    /// Cancels a queued job, or stops a running one at its next step (after a checkpoint, so
    /// [`Factory::resume`] continues where it stopped).
    pub fn cancel(&self, id: u64, who: Address) -> Result<JobRecord, FactoryError> {
        let mut state = self.inner.lock();
        let job = state.jobs.get(&id).ok_or(FactoryError::UnknownJob(id))?;
        if job.owner != who {
            return Err(FactoryError::NotOwner { owner: job.owner });
        }
        match job.status {
            JobStatus::Queued => {
                state.queue.retain(|&q| q != id);
                self.inner
                    .set_status(&mut state, id, JobStatus::Cancelled, None)?;
            }
            JobStatus::Running => {
                state.cancel.insert(id);
            }
            status => {
                return Err(FactoryError::WrongState {
                    id,
                    status: status.name().into(),
                    what: "only queued or running jobs can be cancelled",
                });
            }
        }
        Ok(state.jobs[&id].clone())
    }

    /// Queues a cancelled or failed job again; it continues from its last checkpoint.
    pub fn resume(&self, id: u64, who: Address) -> Result<JobRecord, FactoryError> {
        let mut state = self.inner.lock();
        let job = state.jobs.get(&id).ok_or(FactoryError::UnknownJob(id))?;
        if job.owner != who {
            return Err(FactoryError::NotOwner { owner: job.owner });
        }
        if !matches!(job.status, JobStatus::Cancelled | JobStatus::Failed) {
            return Err(FactoryError::WrongState {
                id,
                status: job.status.name().into(),
                what: "only cancelled or failed jobs can be resumed",
            });
        }
        state.queue.push_back(id);
        self.inner
            .set_status(&mut state, id, JobStatus::Queued, None)?;
        self.inner.wake.notify_all();
        Ok(state.jobs[&id].clone())
    }

    /// Every event job `id` emitted so far, oldest first.
    pub fn history(&self, id: u64) -> Result<Vec<JobEvent>, FactoryError> {
        self.get(id)?;
        let path = self.inner.job_dir(id).join("events.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_error(&path)(e)),
        };
        // A crash can cut the last line short; it is simply not there.
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok().map(Arc::new))
            .collect())
    }

    /// Events of every job from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.events.subscribe()
    }

    /// The finished adapter of job `id`, as a PEFT directory.
    /// Where a finished job's span index lives (attribution's span path).
    pub fn span_index_dir(&self, id: u64) -> PathBuf {
        self.inner.span_index_dir(id)
    }

    /// Where a finished job's gradient store lives (attribution's gradient path).
    pub fn gradients_path(&self, id: u64) -> PathBuf {
        self.inner.gradients_path(id)
    }

    pub fn adapter_dir(&self, id: u64) -> PathBuf {
        self.inner.job_dir(id).join("adapter")
    }

    /// A stored artifact (adapter weights, manifest, row list) by hash.
    pub fn artifact(&self, hash: &B256) -> Result<Vec<u8>, FactoryError> {
        self.inner.artifacts.get(hash)
    }

    /// Blocks until job `id` reaches a terminal state or `timeout` passes; returns its record.
    pub fn wait(&self, id: u64, timeout: Duration) -> Result<JobRecord, FactoryError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.inner.lock();
        loop {
            let job = state.jobs.get(&id).ok_or(FactoryError::UnknownJob(id))?;
            let left = deadline.saturating_duration_since(Instant::now());
            if job.status.is_terminal() || left.is_zero() {
                return Ok(job.clone());
            }
            state = self
                .inner
                .wake
                .wait_timeout(state, left.min(Duration::from_millis(200)))
                .expect("factory state lock")
                .0;
        }
    }

    /// Stops the worker: a running job checkpoints at its next step and stays queued for the
    /// next start.
    pub fn shutdown(&self) {
        self.inner.lock().shutdown = true;
        self.inner.wake.notify_all();
        if let Some(worker) = self.worker.lock().expect("worker handle").take() {
            let _ = worker.join();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("factory state lock")
    }

    fn job_dir(&self, id: u64) -> PathBuf {
        self.root.join("jobs").join(format!("{id:08}"))
    }

    fn persist(&self, record: &JobRecord) -> Result<(), FactoryError> {
        let path = self.job_dir(record.id).join("job.json");
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(record).expect("serialisable"),
        )
    }

    /// Records and broadcasts an event of job `id`.
    fn emit(&self, state: &mut State, id: u64, mut body: Value) {
        let seq = state.next_event.entry(id).or_insert(0);
        body["job"] = json!(id);
        body["seq"] = json!(*seq);
        *seq += 1;
        let path = self.job_dir(id).join("events.jsonl");
        let line = format!("{body}\n");
        if let Err(e) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
        {
            tracing::warn!("cannot append to {}: {e}", path.display());
        }
        let _ = self.events.send(Arc::new(body));
    }

    fn set_status(
        &self,
        state: &mut State,
        id: u64,
        status: JobStatus,
        error: Option<String>,
    ) -> Result<(), FactoryError> {
        let job = state
            .jobs
            .get_mut(&id)
            .ok_or(FactoryError::UnknownJob(id))?;
        job.status = status;
        job.error = error.clone();
        job.updated_at = now();
        let record = job.clone();
        self.persist(&record)?;
        self.emit(
            state,
            id,
            json!({"kind": "status", "status": status, "error": error}),
        );
        self.wake.notify_all();
        Ok(())
    }

    fn work(self: Arc<Self>) {
        let mut loaded: Option<(String, Arc<Model>)> = None;
        loop {
            let id = {
                let mut state = self.lock();
                loop {
                    if state.shutdown {
                        return;
                    }
                    if let Some(id) = state.queue.pop_front() {
                        break id;
                    }
                    state = self.wake.wait(state).expect("factory state lock");
                }
            };
            {
                let mut state = self.lock();
                if let Err(e) = self.set_status(&mut state, id, JobStatus::Running, None) {
                    tracing::error!("job {id}: {e}");
                }
            }
            let outcome = self.run(id, &mut loaded);
            let mut state = self.lock();
            let cancelled = state.cancel.remove(&id);
            let result = match outcome {
                Ok(Some(())) => self.set_status(&mut state, id, JobStatus::Completed, None),
                Ok(None) if state.shutdown && !cancelled => {
                    // Stopped for a shutdown: the next start picks it up again.
                    self.set_status(&mut state, id, JobStatus::Queued, None)
                }
                Ok(None) => self.set_status(&mut state, id, JobStatus::Cancelled, None),
                Err(e) => {
                    tracing::warn!("job {id} failed: {e}");
                    self.set_status(&mut state, id, JobStatus::Failed, Some(e.to_string()))
                }
            };
            if let Err(e) = result {
                tracing::error!("job {id}: cannot record its end: {e}");
            }
        }
    }

    /// Runs job `id` to the end (`Some`) or until cancelled or shut down (`None`).
    fn run(
        &self,
        id: u64,
        loaded: &mut Option<(String, Arc<Model>)>,
    ) -> Result<Option<()>, FactoryError> {
        let job = self
            .lock()
            .jobs
            .get(&id)
            .cloned()
            .ok_or(FactoryError::UnknownJob(id))?;
        let spec = &job.spec;
        let snapshot = self.source.snapshot(spec.snapshot_id)?;
        // Grants expire: checked again when the job actually reads the rows.
        if snapshot.permissioned && !self.source.may_read(snapshot.datanet_id, job.owner)? {
            return Err(FactoryError::NoGrant {
                datanet: snapshot.datanet_id,
                who: job.owner,
            });
        }
        let (stored, path) = self
            .models
            .find(&spec.base_model)?
            .ok_or_else(|| FactoryError::UnknownBaseModel(spec.base_model.clone()))?;
        let model = match loaded {
            Some((hash, model)) if *hash == stored.hash => model.clone(),
            _ => {
                *loaded = None; // free the previous model before loading another
                let model = Arc::new(Model::load_with(&path, Weights::Dequantized)?);
                *loaded = Some((stored.hash.clone(), model.clone()));
                model
            }
        };
        let rows = self.source.rows(spec.snapshot_id)?;
        let dataset = build_dataset(&rows, &model, &spec.data, spec.train.seed)?;
        let mut trainer = Trainer::new(
            &model.llama,
            spec.train.clone(),
            &dataset.train,
            &dataset.eval,
        )?;
        let checkpoints = self.job_dir(id).join("checkpoints");
        std::fs::create_dir_all(&checkpoints).map_err(io_error(&checkpoints))?;
        if trainer.resume(&checkpoints)? {
            let step = trainer.state.step;
            let mut state = self.lock();
            self.emit(&mut state, id, json!({"kind": "resumed", "step": step}));
        }
        let started = Instant::now();
        let outcome = trainer.run(Some(&checkpoints), |event| self.on_train_event(id, event))?;
        {
            let mut state = self.lock();
            if let Some(job) = state.jobs.get_mut(&id) {
                job.train_seconds += started.elapsed().as_secs_f64();
                job.evals = trainer.state.evals.clone();
                let record = job.clone();
                self.persist(&record)?;
            }
        }
        let RunOutcome::Finished(finish) = outcome else {
            return Ok(None);
        };
        let adapter = trainer.adapter()?;
        let evaluation = self.evaluate(&model, &trainer, &adapter, &dataset)?;
        let adapter_dir = self.job_dir(id).join("adapter");
        adapter.save_peft(&adapter_dir, model.llama.config())?;
        let gradients = self.store_gradients(id, &model, &adapter, &dataset, &rows)?;
        let span_dir = self.span_index_dir(id);
        let _ = std::fs::remove_dir_all(&span_dir);
        crate::attribution::build_span_index(
            &span_dir,
            model.tokenizer.vocab_size(),
            snapshot.root,
            &dataset.train,
            &dataset.train_rows,
            &rows,
        )?;
        let base_model_hash: B256 = stored.hash.parse().map_err(|e| {
            FactoryError::BadRequest(format!("model store hash {:?}: {e}", stored.hash))
        })?;
        let job = self
            .lock()
            .jobs
            .get(&id)
            .cloned()
            .ok_or(FactoryError::UnknownJob(id))?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            name: job.name.clone(),
            owner: job.owner,
            job: id,
            base_model: BaseModelRef {
                name: stored.name.clone(),
                hash: base_model_hash,
            },
            adapter: AdapterRef {
                hash: B256::ZERO,
                bytes: 0,
                config: adapter.config.clone(),
            },
            datanets: vec![SnapshotRef {
                datanet_id: snapshot.datanet_id,
                snapshot_id: snapshot.id,
                root: snapshot.root,
                train_rows: dataset.train_rows.len(),
                eval_rows: dataset.eval_rows.len(),
            }],
            train_rows_hash: B256::ZERO,
            hyperparameters: spec.train.clone(),
            data: spec.data.clone(),
            hyperparams_hash: artifacts::hyperparams_hash(&spec.train, &spec.data),
            training: TrainingSummary {
                steps: trainer.state.step,
                tokens: trainer.state.tokens_seen,
                finish,
                seconds: job.train_seconds,
                packing: trainer.packing.clone(),
                evals: trainer.state.evals.clone(),
            },
            evaluation: evaluation.clone(),
            gradients: Some(gradients),
        };
        let (manifest, manifest_hash) = artifacts::store(
            self.artifacts.as_ref(),
            &adapter_dir,
            manifest,
            &dataset.train_rows,
        )?;
        let (eval_loss_milli, eval_perplexity_milli) = evaluation.milli();
        let mut state = self.lock();
        let job = state
            .jobs
            .get_mut(&id)
            .ok_or(FactoryError::UnknownJob(id))?;
        job.result = Some(JobResult {
            adapter_hash: manifest.adapter.hash,
            manifest_hash,
            hyperparams_hash: manifest.hyperparams_hash,
            base_model_hash,
            snapshot_ids: vec![snapshot.id],
            eval_loss_milli,
            eval_perplexity_milli,
            evaluation,
        });
        let record = job.clone();
        self.persist(&record)?;
        Ok(Some(()))
    }

    fn span_index_dir(&self, id: u64) -> PathBuf {
        self.job_dir(id).join("attribution").join("span")
    }

    fn gradients_path(&self, id: u64) -> PathBuf {
        self.job_dir(id).join("gradients.bin")
    }

    /// Sketches every training example's gradient under the final adapter (the gradient path
    /// of attribution) into `gradients.bin` in the job directory and the artifact store.
    fn store_gradients(
        &self,
        id: u64,
        model: &Model,
        adapter: &LoraAdapter,
        dataset: &Dataset,
        rows: &[openledger_dataservice::service::CreditedRow],
    ) -> Result<GradientsRef, FactoryError> {
        let contribution: std::collections::HashMap<B256, u64> =
            rows.iter().map(|r| (r.hash, r.contribution_id)).collect();
        let probe = GradientProbe::new(&model.llama, adapter)?;
        let sketch = Sketch::default();
        let mut stored = Vec::with_capacity(dataset.train.len());
        for (example, row) in dataset.train.iter().zip(&dataset.train_rows) {
            let (gradient, _) = probe.gradient(example, &sketch)?;
            stored.push(StoredGradient {
                row: row.0,
                contribution_id: contribution.get(row).copied().unwrap_or(0),
                gradient,
            });
        }
        let store = GradientStore {
            sketch,
            dim: probe.dim(&sketch),
            rows: stored,
        };
        let bytes = store.encode();
        write_atomic(&self.gradients_path(id), &bytes)?;
        let hash = self.artifacts.put(bytes)?;
        let mut state = self.lock();
        self.emit(
            &mut state,
            id,
            json!({"kind": "gradients", "rows": store.rows.len(), "hash": hash}),
        );
        Ok(GradientsRef {
            hash,
            rows: store.rows.len(),
            sketch,
        })
    }

    /// Records a training event; `false` asks the trainer to stop (cancel or shutdown).
    fn on_train_event(&self, id: u64, event: &TrainEvent) -> bool {
        let mut state = self.lock();
        if let Some(job) = state.jobs.get_mut(&id) {
            match *event {
                TrainEvent::Step {
                    step,
                    total_steps,
                    epoch,
                    loss,
                    learning_rate,
                    tokens_per_second,
                    eta_seconds,
                    ..
                } => {
                    job.progress = Some(Progress {
                        step,
                        total_steps,
                        epoch,
                        loss,
                        learning_rate,
                        tokens_per_second,
                        eta_seconds,
                    });
                }
                TrainEvent::Eval {
                    step,
                    loss,
                    perplexity,
                } => job.evals.push(EvalPoint {
                    step,
                    loss,
                    perplexity,
                }),
                TrainEvent::Checkpoint { .. } => {
                    job.updated_at = now();
                    let record = job.clone();
                    if let Err(e) = self.persist(&record) {
                        tracing::warn!("job {id}: {e}");
                    }
                }
            }
        }
        let body = serde_json::to_value(event).expect("serialisable");
        self.emit(&mut state, id, body);
        !(state.shutdown || state.cancel.contains(&id))
    }

    /// Held-out loss of the base model and of the adapter, and their answers side by side.
    fn evaluate(
        &self,
        model: &Model,
        trainer: &Trainer<'_>,
        adapter: &LoraAdapter,
        dataset: &Dataset,
    ) -> Result<Evaluation, FactoryError> {
        let figures = |p: Option<EvalPoint>| {
            p.map(|p| LossFigures {
                loss: p.loss,
                perplexity: p.perplexity,
            })
        };
        let identity = LoraAdapter::init(
            adapter.config.clone(),
            model.llama.config(),
            0,
            model.llama.device(),
        )?;
        let mut evaluation = Evaluation {
            base: figures(trainer.evaluate_adapter(&identity)?),
            adapter: figures(trainer.evaluate_adapter(adapter)?),
            answers: Vec::new(),
        };
        if let Some(template) = &model.chat {
            let params = SamplingParams {
                max_tokens: 64,
                ..Default::default()
            };
            for prompt in &dataset.eval_prompts {
                let tokens = model
                    .tokenizer
                    .encode(&template.render(&prompt.messages)?)?;
                let answer = |adapter: Option<&LoraAdapter>| {
                    generate_with(
                        &model.llama,
                        adapter,
                        &model.tokenizer,
                        &tokens,
                        &params,
                        |_| true,
                    )
                    .map(|c| c.text)
                };
                evaluation.answers.push(Answer {
                    prompt: prompt
                        .messages
                        .last()
                        .map(|m| m.content.clone())
                        .unwrap_or_default(),
                    reference: prompt.reference.clone(),
                    base: answer(None)?,
                    adapter: answer(Some(adapter))?,
                });
            }
        }
        Ok(evaluation)
    }
}
