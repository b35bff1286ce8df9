//! The data service: uploads in sessions, contributions sealed into content-addressed blobs,
//! snapshots built from what the chain accepted, proofs, reads and exports.
//!
//! # Invariants
//!
//! - Nothing an upload writes is visible until it is sealed: rows go to a staging directory
//!   (wiped at start-up), blobs are content-addressed, and the contribution record that makes
//!   them visible is one redb transaction written last. A crash at any point leaves either no
//!   contribution or a whole one.
//! - Sealing the same rows again gives the same content root, and the existing record is kept:
//!   uploads are idempotent.
//! - The chain decides: a snapshot holds exactly the rows of the contributions the `Datanets`
//!   precompile marks accepted, each row credited to the first accepted contribution that holds
//!   it; the root the owner publishes on chain is the root of those rows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use openledger_datanet::merkle::{InclusionProof, MerkleTree};
use openledger_datanet::pipeline::{DedupIndex, Pipeline, Policy, RejectCode, Rejection};
use openledger_datanet::row::Row;
use openledger_primitives::{Address, B256};
use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::blobs::{BlobConfig, BlobError, BlobStore, content_hash};
use crate::ingest::{self, Content, Format, IngestError};
use crate::ledger::{ContributionInfo, DatanetInfo, Ledger, LedgerError, SnapshotInfo};

/// (datanet id, content root) → [`ContributionRecord`] as JSON.
const CONTRIBUTIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("contributions");
/// snapshot root → [`SnapshotRecord`] as JSON.
const SNAPSHOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("snapshots");

/// How many rejected records a report lists in full (all are counted).
const REPORT_SAMPLES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("datanet {0} does not exist on chain")]
    UnknownDatanet(u64),
    #[error("datanet {0} is closed and takes no contributions")]
    DatanetClosed(u64),
    #[error("snapshot {0} does not exist on chain")]
    UnknownSnapshot(u64),
    #[error("contribution {0} does not exist on chain")]
    UnknownContribution(u64),
    #[error("upload {0} does not exist (it was sealed, or the node restarted before it was)")]
    UnknownUpload(String),
    #[error("upload {0} is already sealed")]
    AlreadySealed(String),
    #[error("no row of this upload was accepted; nothing to contribute (see the report)")]
    NothingAccepted(Box<Report>),
    #[error(
        "contribution {id} (root {root}) was accepted on chain but this node does not hold its rows; upload them here first"
    )]
    MissingRows { id: u64, root: B256 },
    #[error(
        "this node has not built snapshot root {0}; run `openledger datanet snapshot` on the node that has the rows"
    )]
    SnapshotNotBuilt(B256),
    #[error("row {row} is not in snapshot {snapshot}")]
    RowNotInSnapshot { row: B256, snapshot: u64 },
    #[error("no accepted contributions yet; nothing to snapshot")]
    EmptySnapshot,
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("{0}")]
    Io(String),
}

fn storage(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Storage(e.to_string())
}

fn io_error(what: &Path, e: std::io::Error) -> ServiceError {
    ServiceError::Io(format!("{}: {e}", what.display()))
}

/// The off-chain document whose hash a datanet records as `descriptionHash`: what the datanet
/// is for and how its rows are curated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Description {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub policy: Policy,
}

/// A rejected record in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub location: String,
    #[serde(flatten)]
    pub rejection: Rejection,
}

/// What happened to an upload's records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub files: u64,
    pub records: u64,
    pub accepted: u64,
    /// Accepted rows that had personal data replaced by placeholders.
    pub redacted: u64,
    pub bytes_in: u64,
    pub rejected: BTreeMap<String, u64>,
    /// The first rejected records, with their reasons.
    pub rejections: Vec<RejectedRecord>,
}

impl Report {
    fn reject(&mut self, location: String, rejection: Rejection) {
        let code = serde_json::to_value(rejection.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *self.rejected.entry(code).or_default() += 1;
        if self.rejections.len() < REPORT_SAMPLES {
            self.rejections.push(RejectedRecord {
                location,
                rejection,
            });
        }
    }

    fn merge(&mut self, other: &Report) {
        self.files += other.files;
        self.records += other.records;
        self.accepted += other.accepted;
        self.redacted += other.redacted;
        self.bytes_in += other.bytes_in;
        for (code, n) in &other.rejected {
            *self.rejected.entry(code.clone()).or_default() += n;
        }
    }
}

/// A sealed upload: what the contributor records on chain with `contribute`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContributionRecord {
    pub datanet_id: u64,
    pub content_root: B256,
    pub row_count: u64,
    pub byte_count: u64,
    /// Blob of the accepted rows, one canonical JSON line each, in upload order.
    pub segment: B256,
    /// Blob of the row index ([`encode_rows`]).
    pub manifest: B256,
    pub report: Report,
}

/// One row inside a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowEntry {
    pub hash: B256,
    pub offset: u64,
    pub len: u32,
}

const ROWS_MAGIC: &[u8; 4] = b"OLR1";
const ROW_ENTRY_BYTES: usize = 32 + 8 + 4;

/// The binary row index of a segment: magic, then (hash, offset, length) per row.
fn encode_rows(rows: &[RowEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + rows.len() * ROW_ENTRY_BYTES);
    out.extend_from_slice(ROWS_MAGIC);
    for r in rows {
        out.extend_from_slice(r.hash.as_slice());
        out.extend_from_slice(&r.offset.to_be_bytes());
        out.extend_from_slice(&r.len.to_be_bytes());
    }
    out
}

fn decode_rows(bytes: &[u8]) -> Result<Vec<RowEntry>, ServiceError> {
    let body = bytes
        .strip_prefix(ROWS_MAGIC.as_slice())
        .filter(|b| b.len() % ROW_ENTRY_BYTES == 0)
        .ok_or_else(|| storage("row index blob is malformed"))?;
    Ok(body
        .chunks_exact(ROW_ENTRY_BYTES)
        .map(|c| RowEntry {
            hash: B256::from_slice(&c[..32]),
            offset: u64::from_be_bytes(c[32..40].try_into().expect("8 bytes")),
            len: u32::from_be_bytes(c[40..44].try_into().expect("4 bytes")),
        })
        .collect())
}

/// A contribution as a snapshot credits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotContribution {
    pub id: u64,
    pub contributor: Address,
    pub content_root: B256,
    pub segment: B256,
    pub manifest: B256,
    /// Rows of this contribution in the snapshot (rows another contribution already held are
    /// credited to that one).
    pub rows_credited: u64,
    pub report: Report,
}

/// A snapshot this node built; published on chain under `root`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub datanet_id: u64,
    pub root: B256,
    pub row_count: u64,
    pub contributions: Vec<SnapshotContribution>,
    /// Contributions the chain rejected or still holds pending when this was built.
    pub rejected_contributions: u64,
    pub pending_contributions: u64,
}

/// A row of a snapshot, with its credit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditedRow {
    pub hash: B256,
    pub contribution_id: u64,
    pub contributor: Address,
    pub row: Row,
}

/// What `openledger datanet snapshot` publishes on chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDraft {
    pub datanet_id: u64,
    pub root: B256,
    pub row_count: u64,
    /// The latest published snapshot of the datanet (0 for none): the parent to record.
    pub parent_snapshot_id: u64,
    pub contributions: u64,
}

/// The accepted rows of a datanet, for dedup, and which contributions they came from.
#[derive(Debug, Default)]
struct DatanetIndex {
    rows: DedupIndex,
    included: HashSet<u64>,
}

/// An upload in progress.
struct Session {
    datanet: DatanetInfo,
    pipeline: Pipeline,
    dir: PathBuf,
    segment: BufWriter<File>,
    segment_len: u64,
    segment_hash: blake3::Hasher,
    rows: Vec<RowEntry>,
    index: DedupIndex,
    report: Report,
    files: u64,
}

/// Where the service keeps its files and blobs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub data_dir: PathBuf,
    pub blobs: BlobConfig,
}

impl ServiceConfig {
    /// Everything under `data_dir`, blobs included.
    pub fn local(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            blobs: BlobConfig::Local {
                root: data_dir.join("blobs"),
            },
        }
    }
}

/// The data service. Cheap to clone; all methods may be called from any thread. Methods that
/// do heavy work are blocking: async callers run them on a blocking thread.
#[derive(Clone)]
pub struct DataService {
    inner: Arc<Inner>,
}

struct Inner {
    ledger: Arc<dyn Ledger>,
    blobs: BlobStore,
    db: redb::Database,
    staging: PathBuf,
    exports: PathBuf,
    runtime: tokio::runtime::Handle,
    sessions: Mutex<HashMap<String, Arc<Mutex<Session>>>>,
    indexes: Mutex<HashMap<u64, Arc<RwLock<DatanetIndex>>>>,
    last_snapshot: Mutex<Option<Arc<LoadedSnapshot>>>,
    next_session: std::sync::atomic::AtomicU64,
}

impl DataService {
    /// Opens (or creates) the service's store under `config.data_dir`, discarding any upload
    /// that a crash left unsealed. Must be called inside a tokio runtime (blob I/O is async).
    pub fn open(config: &ServiceConfig, ledger: Arc<dyn Ledger>) -> Result<Self, ServiceError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| io_error(&config.data_dir, e))?;
        let staging = config.data_dir.join("staging");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
        }
        std::fs::create_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
        let exports = config.data_dir.join("exports");
        std::fs::create_dir_all(&exports).map_err(|e| io_error(&exports, e))?;
        let db =
            redb::Database::create(config.data_dir.join("dataservice.redb")).map_err(storage)?;
        {
            let txn = db.begin_write().map_err(storage)?;
            txn.open_table(CONTRIBUTIONS).map_err(storage)?;
            txn.open_table(SNAPSHOTS).map_err(storage)?;
            txn.commit().map_err(storage)?;
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ServiceError::Io("the data service needs a tokio runtime".into()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                ledger,
                blobs: BlobStore::open(&config.blobs)?,
                db,
                staging,
                exports,
                runtime,
                sessions: Mutex::new(HashMap::new()),
                indexes: Mutex::new(HashMap::new()),
                last_snapshot: Mutex::new(None),
                next_session: std::sync::atomic::AtomicU64::new(1),
            }),
        })
    }

    pub fn ledger(&self) -> &dyn Ledger {
        self.inner.ledger.as_ref()
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// Runs an async blob operation from blocking code.
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        tokio::task::block_in_place(|| self.inner.runtime.block_on(f))
    }

    /// Stores any bytes content-addressed (model artifacts, manifests); returns the hash.
    pub fn put_blob(&self, bytes: Vec<u8>) -> Result<B256, ServiceError> {
        Ok(self.block_on(self.inner.blobs.put(Bytes::from(bytes)))?)
    }

    /// The bytes stored under `hash`, checked against it.
    pub fn blob(&self, hash: &B256) -> Result<Bytes, ServiceError> {
        Ok(self.block_on(self.inner.blobs.get(hash))?)
    }

    /// Stores a datanet description document; its hash goes into `createDatanet`.
    pub fn put_description(&self, description: &Description) -> Result<B256, ServiceError> {
        let bytes = serde_json::to_vec(description).expect("descriptions serialise");
        Ok(self.block_on(self.inner.blobs.put(Bytes::from(bytes)))?)
    }

    /// The description a datanet recorded on chain; the default one when its hash names no
    /// document this node holds (a datanet created with `cast send` and a made-up hash).
    pub fn description(&self, datanet: &DatanetInfo) -> Description {
        match self.block_on(self.inner.blobs.get(&datanet.description_hash)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => Description::default(),
        }
    }

    pub fn datanet(&self, id: u64) -> Result<DatanetInfo, ServiceError> {
        self.inner
            .ledger
            .datanet(id)?
            .ok_or(ServiceError::UnknownDatanet(id))
    }

    /// Starts an upload to a datanet that exists and is open; returns the upload id.
    pub fn begin_upload(&self, datanet_id: u64) -> Result<String, ServiceError> {
        let datanet = self.datanet(datanet_id)?;
        if datanet.closed {
            return Err(ServiceError::DatanetClosed(datanet_id));
        }
        let policy = self.description(&datanet).policy;
        let n = self
            .inner
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{datanet_id}-{n}-{:08x}", rand_suffix());
        let dir = self.inner.staging.join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let segment_path = dir.join("segment.jsonl");
        let segment = File::create(&segment_path).map_err(|e| io_error(&segment_path, e))?;
        let session = Session {
            pipeline: Pipeline::new(datanet.schema, policy),
            datanet,
            dir,
            segment: BufWriter::with_capacity(1 << 20, segment),
            segment_len: 0,
            segment_hash: blake3::Hasher::new(),
            rows: Vec::new(),
            index: DedupIndex::default(),
            report: Report::default(),
            files: 0,
        };
        self.inner
            .sessions
            .lock()
            .expect("sessions lock")
            .insert(id.clone(), Arc::new(Mutex::new(session)));
        Ok(id)
    }

    fn session(&self, upload: &str) -> Result<Arc<Mutex<Session>>, ServiceError> {
        self.inner
            .sessions
            .lock()
            .expect("sessions lock")
            .get(upload)
            .cloned()
            .ok_or_else(|| ServiceError::UnknownUpload(upload.to_string()))
    }

    /// A staging path for a file of `upload` that is still arriving (the HTTP API streams
    /// request bodies there before reading them).
    pub fn staging_file(&self, upload: &str, name: &str) -> Result<PathBuf, ServiceError> {
        let session = self.session(upload)?;
        let mut s = session.lock().expect("session lock");
        s.files += 1;
        let ext = Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("bin");
        Ok(s.dir.join(format!("in-{}.{ext}", s.files)))
    }

    /// Runs every record of the file at `path` through the datanet's pipeline. `name` is what
    /// locations in the report call the file (and its extension picks the format).
    pub fn ingest_file(
        &self,
        upload: &str,
        path: &Path,
        name: &str,
    ) -> Result<Report, ServiceError> {
        let format =
            Format::from_path(Path::new(name)).ok_or_else(|| IngestError::UnknownFormat {
                path: name.to_string(),
            })?;
        let session = self.session(upload)?;
        let mut s = session.lock().expect("session lock");
        let datanet_index = self.datanet_index(&s.datanet)?;
        let held = datanet_index.read().expect("index lock");
        let max = s.pipeline.policy().max_row_bytes;
        let records = ingest::open(path, format, name, max)?;
        let mut report = Report {
            files: 1,
            ..Report::default()
        };
        let s = &mut *s;
        for record in records {
            report.records += 1;
            report.bytes_in += record.bytes;
            let location = record.location.to_string();
            let decided = match record.content {
                Content::Unreadable(reason) => Err(Rejection::new(RejectCode::Unreadable, reason)),
                Content::Json(value) => s.pipeline.check_json(value, &[&held.rows, &s.index]),
                Content::Text(text) => s.pipeline.check_text(&text, &[&held.rows, &s.index]),
            };
            match decided {
                Err(rejection) => report.reject(location, rejection),
                Ok(accepted) => {
                    let mut line = accepted.canonical.into_bytes();
                    line.push(b'\n');
                    s.segment
                        .write_all(&line)
                        .map_err(|e| io_error(&s.dir, e))?;
                    s.segment_hash.update(&line);
                    s.rows.push(RowEntry {
                        hash: accepted.hash,
                        offset: s.segment_len,
                        len: (line.len() - 1) as u32,
                    });
                    s.segment_len += line.len() as u64;
                    s.index.insert(accepted.hash, &accepted.signature);
                    report.accepted += 1;
                    report.redacted += !accepted.redacted.is_empty() as u64;
                }
            }
        }
        let kept = REPORT_SAMPLES.saturating_sub(s.report.rejections.len());
        s.report
            .rejections
            .extend(report.rejections.iter().take(kept).cloned());
        s.report.merge(&report);
        Ok(report)
    }

    /// Seals an upload into a contribution: stores its rows and index as blobs, then records
    /// it. Sealing rows that were sealed before returns the existing record.
    pub fn seal(&self, upload: &str) -> Result<ContributionRecord, ServiceError> {
        let session = self
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .remove(upload)
            .ok_or_else(|| ServiceError::UnknownUpload(upload.to_string()))?;
        let Ok(session) = Arc::try_unwrap(session) else {
            return Err(ServiceError::AlreadySealed(upload.to_string()));
        };
        let mut s = session.into_inner().expect("session lock");
        let result = self.seal_session(&mut s);
        let _ = std::fs::remove_dir_all(&s.dir);
        result
    }

    fn seal_session(&self, s: &mut Session) -> Result<ContributionRecord, ServiceError> {
        if s.rows.is_empty() {
            return Err(ServiceError::NothingAccepted(Box::new(s.report.clone())));
        }
        s.segment.flush().map_err(|e| io_error(&s.dir, e))?;
        s.segment
            .get_ref()
            .sync_all()
            .map_err(|e| io_error(&s.dir, e))?;
        let content_root = MerkleTree::new(s.rows.iter().map(|r| r.hash)).root();
        let key = contribution_key(s.datanet.id, &content_root);
        if let Some(existing) = self.contribution_record_by_key(&key)? {
            return Ok(existing);
        }
        let segment = B256::from(*s.segment_hash.finalize().as_bytes());
        self.block_on(
            self.inner
                .blobs
                .put_file(&s.dir.join("segment.jsonl"), segment),
        )?;
        let manifest = self.block_on(self.inner.blobs.put(Bytes::from(encode_rows(&s.rows))))?;
        let record = ContributionRecord {
            datanet_id: s.datanet.id,
            content_root,
            row_count: s.rows.len() as u64,
            byte_count: s.segment_len,
            segment,
            manifest,
            report: s.report.clone(),
        };
        let txn = self.inner.db.begin_write().map_err(storage)?;
        {
            let mut table = txn.open_table(CONTRIBUTIONS).map_err(storage)?;
            let json = serde_json::to_vec(&record).expect("records serialise");
            table
                .insert(key.as_slice(), json.as_slice())
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(record)
    }

    /// Drops an upload without sealing it.
    pub fn abort(&self, upload: &str) {
        if let Some(session) = self
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .remove(upload)
        {
            let dir = session.lock().expect("session lock").dir.clone();
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn contribution_record_by_key(
        &self,
        key: &[u8],
    ) -> Result<Option<ContributionRecord>, ServiceError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        let table = txn.open_table(CONTRIBUTIONS).map_err(storage)?;
        let Some(value) = table.get(key).map_err(storage)? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(storage)
    }

    /// The sealed upload with this content root, if this node holds it.
    pub fn contribution_record(
        &self,
        datanet_id: u64,
        content_root: &B256,
    ) -> Result<Option<ContributionRecord>, ServiceError> {
        self.contribution_record_by_key(&contribution_key(datanet_id, content_root))
    }

    /// A contribution as the chain records it, with this node's report on its rows.
    pub fn contribution(
        &self,
        id: u64,
    ) -> Result<(ContributionInfo, Option<ContributionRecord>), ServiceError> {
        let info = self
            .inner
            .ledger
            .contribution(id)?
            .ok_or(ServiceError::UnknownContribution(id))?;
        let record = self.contribution_record(info.datanet_id, &info.content_root)?;
        Ok((info, record))
    }

    /// The dedup index of a datanet's accepted rows, brought up to date with the chain.
    fn datanet_index(
        &self,
        datanet: &DatanetInfo,
    ) -> Result<Arc<RwLock<DatanetIndex>>, ServiceError> {
        let index = self
            .inner
            .indexes
            .lock()
            .expect("indexes lock")
            .entry(datanet.id)
            .or_default()
            .clone();
        let accepted: Vec<ContributionInfo> = self
            .inner
            .ledger
            .contributions(datanet.id)?
            .into_iter()
            .filter(ContributionInfo::accepted)
            .collect();
        let missing: Vec<&ContributionInfo> = {
            let held = index.read().expect("index lock");
            accepted
                .iter()
                .filter(|c| !held.included.contains(&c.id))
                .collect()
        };
        if missing.is_empty() {
            return Ok(index);
        }
        let pipeline = Pipeline::new(datanet.schema, Policy::default());
        let mut held = index.write().expect("index lock");
        for c in missing {
            if held.included.contains(&c.id) {
                continue;
            }
            // Rows this node never received cannot be deduped against; they are skipped here
            // and reported when a snapshot needs them.
            if let Some(record) = self.contribution_record(datanet.id, &c.content_root)? {
                let segment = self.block_on(self.inner.blobs.get(&record.segment))?;
                for line in segment.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    let row: Row = serde_json::from_slice(line).map_err(storage)?;
                    let hash = openledger_datanet::merkle::row_hash(
                        std::str::from_utf8(line).map_err(storage)?,
                    );
                    held.rows.insert(hash, &pipeline.signature(&row));
                }
            }
            held.included.insert(c.id);
        }
        drop(held);
        Ok(index)
    }

    /// Builds (or finds) the snapshot of everything the chain has accepted for a datanet.
    pub fn build_snapshot(&self, datanet_id: u64) -> Result<SnapshotDraft, ServiceError> {
        let _datanet = self.datanet(datanet_id)?;
        let all = self.inner.ledger.contributions(datanet_id)?;
        let (accepted, others): (Vec<_>, Vec<_>) =
            all.into_iter().partition(ContributionInfo::accepted);
        if accepted.is_empty() {
            return Err(ServiceError::EmptySnapshot);
        }
        let mut seen: HashMap<B256, ()> = HashMap::new();
        let mut entries: Vec<(B256, u32, u64, u32)> = Vec::new();
        let mut contributions = Vec::new();
        for (i, c) in accepted.iter().enumerate() {
            let record = self
                .contribution_record(datanet_id, &c.content_root)?
                .ok_or(ServiceError::MissingRows {
                    id: c.id,
                    root: c.content_root,
                })?;
            let rows = decode_rows(&self.block_on(self.inner.blobs.get(&record.manifest))?)?;
            let mut credited = 0;
            for r in rows {
                if seen.insert(r.hash, ()).is_none() {
                    entries.push((r.hash, i as u32, r.offset, r.len));
                    credited += 1;
                }
            }
            contributions.push(SnapshotContribution {
                id: c.id,
                contributor: c.contributor,
                content_root: c.content_root,
                segment: record.segment,
                manifest: record.manifest,
                rows_credited: credited,
                report: record.report,
            });
        }
        entries.sort_by_key(|e| e.0);
        let root = MerkleTree::new(entries.iter().map(|e| e.0)).root();
        let mut manifest = Vec::with_capacity(4 + entries.len() * 48);
        manifest.extend_from_slice(SNAPSHOT_MAGIC);
        for (hash, contribution, offset, len) in &entries {
            manifest.extend_from_slice(hash.as_slice());
            manifest.extend_from_slice(&contribution.to_be_bytes());
            manifest.extend_from_slice(&offset.to_be_bytes());
            manifest.extend_from_slice(&len.to_be_bytes());
        }
        let manifest = self.block_on(self.inner.blobs.put(Bytes::from(manifest)))?;
        let record = SnapshotRecord {
            datanet_id,
            root,
            row_count: entries.len() as u64,
            contributions,
            rejected_contributions: others.iter().filter(|c| c.status == 2).count() as u64,
            pending_contributions: others.iter().filter(|c| c.status == 0).count() as u64,
        };
        let txn = self.inner.db.begin_write().map_err(storage)?;
        {
            let mut table = txn.open_table(SNAPSHOTS).map_err(storage)?;
            let value = SnapshotValue {
                record: record.clone(),
                manifest,
            };
            let json = serde_json::to_vec(&value).expect("records serialise");
            table
                .insert(root.as_slice(), json.as_slice())
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        let parent = self.inner.ledger.latest_snapshot(datanet_id)?;
        Ok(SnapshotDraft {
            datanet_id,
            root,
            row_count: record.row_count,
            parent_snapshot_id: parent.map_or(0, |s| s.id),
            contributions: record.contributions.len() as u64,
        })
    }

    /// A published snapshot and this node's record of it.
    pub fn snapshot(&self, id: u64) -> Result<(SnapshotInfo, SnapshotRecord), ServiceError> {
        let info = self
            .inner
            .ledger
            .snapshot(id)?
            .ok_or(ServiceError::UnknownSnapshot(id))?;
        let value = self.snapshot_value(&info.root)?;
        Ok((info, value.record))
    }

    fn snapshot_value(&self, root: &B256) -> Result<SnapshotValue, ServiceError> {
        let txn = self.inner.db.begin_read().map_err(storage)?;
        let table = txn.open_table(SNAPSHOTS).map_err(storage)?;
        let value = table
            .get(root.as_slice())
            .map_err(storage)?
            .ok_or(ServiceError::SnapshotNotBuilt(*root))?;
        serde_json::from_slice(value.value()).map_err(storage)
    }

    /// The snapshot's rows in row-hash order (the Merkle leaf order) and its tree. The last
    /// snapshot asked for is kept: proofs and row pages come in bursts for one snapshot, and
    /// rebuilding a million-row tree per request would dominate them.
    fn snapshot_entries(&self, value: &SnapshotValue) -> Result<Arc<LoadedSnapshot>, ServiceError> {
        if let Some(loaded) = self
            .inner
            .last_snapshot
            .lock()
            .expect("cache lock")
            .as_ref()
            && loaded.root == value.record.root
        {
            return Ok(loaded.clone());
        }
        let bytes = self.block_on(self.inner.blobs.get(&value.manifest))?;
        let body = bytes
            .strip_prefix(SNAPSHOT_MAGIC.as_slice())
            .filter(|b| b.len() % 48 == 0)
            .ok_or_else(|| storage("snapshot manifest is malformed"))?;
        let entries: Vec<SnapshotEntry> = body
            .chunks_exact(48)
            .map(|c| SnapshotEntry {
                hash: B256::from_slice(&c[..32]),
                contribution: u32::from_be_bytes(c[32..36].try_into().expect("4 bytes")) as usize,
                offset: u64::from_be_bytes(c[36..44].try_into().expect("8 bytes")),
                len: u32::from_be_bytes(c[44..48].try_into().expect("4 bytes")),
            })
            .collect();
        let tree = MerkleTree::new(entries.iter().map(|e| e.hash));
        if tree.root() != value.record.root {
            return Err(storage(format!(
                "snapshot manifest {} does not hash to root {}",
                value.manifest, value.record.root
            )));
        }
        let loaded = Arc::new(LoadedSnapshot {
            root: value.record.root,
            entries,
            tree,
        });
        *self.inner.last_snapshot.lock().expect("cache lock") = Some(loaded.clone());
        Ok(loaded)
    }

    /// An inclusion proof of `row` in published snapshot `snapshot_id`, checked against the
    /// root on chain before it is handed out.
    pub fn prove(&self, snapshot_id: u64, row: B256) -> Result<InclusionProof, ServiceError> {
        let (info, _) = self.snapshot(snapshot_id)?;
        let value = self.snapshot_value(&info.root)?;
        let loaded = self.snapshot_entries(&value)?;
        let proof = loaded
            .tree
            .prove(row)
            .ok_or(ServiceError::RowNotInSnapshot {
                row,
                snapshot: snapshot_id,
            })?;
        debug_assert!(proof.verify(info.root));
        Ok(proof)
    }

    /// Rows `offset..offset + limit` of a published snapshot, in row-hash order.
    pub fn snapshot_rows(
        &self,
        snapshot_id: u64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<CreditedRow>, ServiceError> {
        let (info, _) = self.snapshot(snapshot_id)?;
        let value = self.snapshot_value(&info.root)?;
        let loaded = self.snapshot_entries(&value)?;
        loaded
            .entries
            .iter()
            .skip(offset)
            .take(limit)
            .map(|e| self.read_row(&value.record, e))
            .collect()
    }

    /// One row of a published snapshot by hash.
    pub fn snapshot_row(&self, snapshot_id: u64, row: B256) -> Result<CreditedRow, ServiceError> {
        let (info, _) = self.snapshot(snapshot_id)?;
        let value = self.snapshot_value(&info.root)?;
        let loaded = self.snapshot_entries(&value)?;
        let entries = &loaded.entries;
        let i = entries
            .binary_search_by_key(&row, |e| e.hash)
            .map_err(|_| ServiceError::RowNotInSnapshot {
                row,
                snapshot: snapshot_id,
            })?;
        self.read_row(&value.record, &entries[i])
    }

    fn read_row(
        &self,
        record: &SnapshotRecord,
        e: &SnapshotEntry,
    ) -> Result<CreditedRow, ServiceError> {
        let c = &record.contributions[e.contribution];
        let bytes = self.block_on(self.inner.blobs.get_range(
            &c.segment,
            e.offset,
            e.len as u64,
        ))?;
        let text = std::str::from_utf8(&bytes).map_err(storage)?;
        let actual = openledger_datanet::merkle::row_hash(text);
        if actual != e.hash {
            return Err(ServiceError::Blob(BlobError::Corrupt {
                key: e.hash,
                actual,
            }));
        }
        Ok(CreditedRow {
            hash: e.hash,
            contribution_id: c.id,
            contributor: c.contributor,
            row: serde_json::from_str(text).map_err(storage)?,
        })
    }

    /// Writes (once; later calls reuse it) the export of a published snapshot: `rows.jsonl`,
    /// `rows.parquet`, `README.md` (the dataset card) and `card.json`. Returns its directory.
    pub fn export(&self, snapshot_id: u64) -> Result<PathBuf, ServiceError> {
        let (info, _) = self.snapshot(snapshot_id)?;
        let datanet = self.datanet(info.datanet_id)?;
        let value = self.snapshot_value(&info.root)?;
        let dir = self.inner.exports.join(format!("{}", info.root));
        if dir.join("card.json").exists() {
            return Ok(dir);
        }
        let tmp = self
            .inner
            .exports
            .join(format!(".tmp-{}-{:08x}", info.root, rand_suffix()));
        std::fs::create_dir_all(&tmp).map_err(|e| io_error(&tmp, e))?;
        let loaded = self.snapshot_entries(&value)?;
        let entries = &loaded.entries;
        // Read each contribution's segment once, in credit order, rather than row by row.
        let mut by_contribution: Vec<Vec<&SnapshotEntry>> =
            vec![Vec::new(); value.record.contributions.len()];
        for e in entries {
            by_contribution[e.contribution].push(e);
        }
        let mut writer = crate::export::ExportWriter::create(&tmp, datanet.schema)?;
        for (c, rows) in value.record.contributions.iter().zip(&mut by_contribution) {
            rows.sort_by_key(|e| e.offset);
            let segment = self.block_on(self.inner.blobs.get(&c.segment))?;
            for e in rows.iter() {
                let line = &segment[e.offset as usize..e.offset as usize + e.len as usize];
                let text = std::str::from_utf8(line).map_err(storage)?;
                let row: Row = serde_json::from_str(text).map_err(storage)?;
                writer.push(e.hash, c.id, c.contributor, text, &row)?;
            }
        }
        writer.finish()?;
        let description = self.description(&datanet);
        crate::export::write_card(&tmp, &datanet, &description, &info, &value.record)?;
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => {}
            // Another export of the same snapshot finished first; its files are identical.
            Err(_) if dir.join("card.json").exists() => {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Err(e) => return Err(io_error(&dir, e)),
        }
        Ok(dir)
    }

    /// Whether `who` may read datanet `datanet_id`'s rows.
    pub fn may_read(&self, datanet_id: u64, who: Option<Address>) -> Result<bool, ServiceError> {
        let datanet = self.datanet(datanet_id)?;
        if !datanet.permissioned {
            return Ok(true);
        }
        match who {
            None => Ok(false),
            Some(who) => Ok(self.inner.ledger.may_read(datanet_id, who)?),
        }
    }
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"OLS1";

/// A snapshot's manifest, decoded, with its Merkle tree.
struct LoadedSnapshot {
    root: B256,
    entries: Vec<SnapshotEntry>,
    tree: MerkleTree,
}

struct SnapshotEntry {
    hash: B256,
    contribution: usize,
    offset: u64,
    len: u32,
}

#[derive(Serialize, Deserialize)]
struct SnapshotValue {
    record: SnapshotRecord,
    manifest: B256,
}

fn contribution_key(datanet_id: u64, root: &B256) -> Vec<u8> {
    let mut key = datanet_id.to_be_bytes().to_vec();
    key.extend_from_slice(root.as_slice());
    key
}

/// A few random bits for names that must not collide across restarts.
fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

/// Content hash of a description document, as [`DataService::put_description`] stores it.
pub fn description_hash(description: &Description) -> B256 {
    content_hash(&serde_json::to_vec(description).expect("descriptions serialise"))
}
