//! Metering: who pays for a request, checked before any compute, and the usage records that
//! settlement later charges.
//!
//! The API asks a [`Meter`] to admit each request with the caller's API key, the model and the
//! most tokens the request can use. The meter answers with an [`Admission`] — the paying
//! account and the price, with the worst-case fee reserved against the account's deposit — or
//! a refusal the client sees as an OpenAI-shaped error. When the request ends, the API hands
//! back what it really used, and the meter turns it into a [`UsageRecord`]; a request that
//! fails or whose client vanishes releases its reservation and is not charged.
//!
//! [`UsageLog`] keeps the records on disk until they are settled: an append-only JSON-lines
//! file of records and one of settled request ids, each line fsynced before it counts, so a
//! crash loses no served request and never settles one twice.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Why a request is refused before it runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    /// No API key, or one the node does not know (HTTP 401).
    #[error("{0}")]
    Unauthorized(String),
    /// The account cannot pay for the request (HTTP 402).
    #[error("{0}")]
    PaymentRequired(String),
    /// The meter cannot decide now (HTTP 503), e.g. the chain is unreachable.
    #[error("{0}")]
    Unavailable(String),
}

/// A request let through: who pays, at what price, and what is held back for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The paying account (`0x…`), `None` for a free model called without a key.
    pub account: Option<String>,
    /// The on-chain model id (0: the base model or an unpublished adapter, free).
    pub model_id: u64,
    /// Price per 1,000 tokens in wei.
    pub price_per_1k: u128,
    /// Worst-case fee reserved against the deposit until the request ends.
    pub reserved: u128,
}

/// What a finished request used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// BLAKE3 of the completion's token ids (little-endian `u32`s).
    pub response_hash: [u8; 32],
    /// BLAKE3 of the completion's attribution record (zero without one).
    pub attribution_hash: [u8; 32],
    /// Attributed contributions and their parts per million (sum 1,000,000, or empty).
    pub shares: Vec<(u64, u32)>,
}

/// A completion traced back to the datanet rows that shaped it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributed {
    /// BLAKE3 of the canonical attribution record.
    pub record_hash: [u8; 32],
    /// Contributions and their parts per million, summing to 1,000,000 (or empty).
    pub shares: Vec<(u64, u32)>,
    /// What the client sees when it asks (`"attribution": true`): the record and the spans,
    /// by token offsets into the completion.
    pub detail: serde_json::Value,
}

/// Computes the attribution of completions (Proof of Attribution).
pub trait Attributor: Send + Sync {
    /// The attribution of `completion` (token ids) produced by the served model `model`, or
    /// `None` when that model has nothing to attribute to (the base model, no index).
    fn attribute(&self, model: &str, completion: &[u32]) -> Option<Attributed>;
}

/// Decides who pays for requests and records what they used.
pub trait Meter: Send + Sync {
    /// Admits a request that may use up to `max_tokens` (prompt + completion) tokens, or
    /// refuses it. May block (it can ask the chain); the API calls it off the async threads.
    fn admit(
        &self,
        api_key: Option<&str>,
        model: &str,
        max_tokens: u64,
    ) -> Result<Admission, MeterError>;

    /// Ends an admitted request: `Some` records its usage for settlement, `None` (failed or
    /// abandoned) only releases the reservation.
    fn finish(&self, admission: &Admission, usage: Option<Usage>);
}

/// The fee of `tokens` at `price_per_1k` wei per 1,000 tokens, rounded down — the same formula
/// the Settlement precompile applies, so a record's fee is what the chain will accept.
pub fn fee(tokens: u64, price_per_1k: u128) -> u128 {
    (tokens as u128).saturating_mul(price_per_1k) / 1_000
}

/// The hash a usage record carries for a completion.
pub fn response_hash(tokens: &[u32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for t in tokens {
        hasher.update(&t.to_le_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// One served, charged request, as it waits for settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Unique per request (`0x` + 64 hex digits).
    pub request_id: String,
    pub account: String,
    pub model_id: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Fee in wei, as a decimal string (JSON numbers lose precision past 2⁵³).
    pub fee: String,
    pub response_hash: String,
    /// BLAKE3 of the attribution record, zero until attribution is attached.
    pub attribution_hash: String,
    /// Attributed contributions and their parts per million (sum 1,000,000, or empty).
    pub shares: Vec<(u64, u32)>,
    /// Unix seconds.
    pub created: u64,
}

/// Usage records on disk, pending until marked settled.
pub struct UsageLog {
    dir: PathBuf,
    inner: Mutex<LogState>,
}

struct LogState {
    records: File,
    settled: File,
    /// Records not yet settled, in the order they were served.
    pending: BTreeMap<u64, UsageRecord>,
    next: u64,
    /// Unsettled fees per account, in wei.
    owed: BTreeMap<String, u128>,
}

const RECORDS: &str = "usage.jsonl";
const SETTLED: &str = "usage-settled.jsonl";

#[derive(Serialize, Deserialize)]
struct SettledLine {
    request_id: String,
    tx: String,
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// The complete JSON lines of a log file. A torn last line (a crash mid-append) is dropped and
/// cut off, so the next append starts on a fresh line.
fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Vec<T>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(path, "cannot open", e)),
    };
    let mut out = Vec::new();
    let mut good_bytes = 0u64;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| io_error(path, "cannot read", e))?;
        if n == 0 {
            break;
        }
        number += 1;
        if !line.ends_with('\n') {
            // Torn write: never acknowledged, so nothing relied on it.
            break;
        }
        let value = serde_json::from_str(line.trim_end()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} line {number} is not a usage line ({e}); move the file away to start a new log",
                    path.display()
                ),
            )
        })?;
        out.push(value);
        good_bytes += n as u64;
    }
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_error(path, "cannot open", e))?;
    if file.metadata()?.len() != good_bytes {
        file.set_len(good_bytes)
            .map_err(|e| io_error(path, "cannot truncate the torn end of", e))?;
    }
    Ok(out)
}

fn append(file: &mut File, line: &impl Serialize) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(line).expect("serialisable");
    bytes.push(b'\n');
    file.write_all(&bytes)?;
    file.sync_data()
}

impl UsageLog {
    /// Opens (or creates) the log in `dir`, recovering the pending records.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "cannot create", e))?;
        let records: Vec<UsageRecord> = read_lines(&dir.join(RECORDS))?;
        let settled: Vec<SettledLine> = read_lines(&dir.join(SETTLED))?;
        let done: std::collections::HashSet<String> =
            settled.into_iter().map(|s| s.request_id).collect();
        let open = |name: &str| {
            let path = dir.join(name);
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| io_error(&path, "cannot open", e))
        };
        let mut state = LogState {
            records: open(RECORDS)?,
            settled: open(SETTLED)?,
            pending: BTreeMap::new(),
            next: 0,
            owed: BTreeMap::new(),
        };
        for record in records {
            if !done.contains(&record.request_id) {
                state.add(record);
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            inner: Mutex::new(state),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a record; it is pending once this returns.
    pub fn record(&self, record: UsageRecord) -> std::io::Result<()> {
        let mut state = self.inner.lock().expect("usage log lock");
        append(&mut state.records, &record)?;
        state.add(record);
        Ok(())
    }

    /// Up to `limit` pending records, oldest first.
    pub fn pending(&self, limit: usize) -> Vec<UsageRecord> {
        let state = self.inner.lock().expect("usage log lock");
        state.pending.values().take(limit).cloned().collect()
    }

    /// Unsettled fees of `account`, in wei.
    pub fn owed(&self, account: &str) -> u128 {
        let state = self.inner.lock().expect("usage log lock");
        state.owed.get(account).copied().unwrap_or(0)
    }

    /// Marks records settled by transaction `tx`.
    pub fn mark_settled(&self, request_ids: &[String], tx: &str) -> std::io::Result<()> {
        let mut state = self.inner.lock().expect("usage log lock");
        for id in request_ids {
            append(
                &mut state.settled,
                &SettledLine {
                    request_id: id.clone(),
                    tx: tx.to_string(),
                },
            )?;
            state.remove(id);
        }
        Ok(())
    }
}

impl LogState {
    fn add(&mut self, record: UsageRecord) {
        let fee: u128 = record.fee.parse().unwrap_or(0);
        *self.owed.entry(record.account.clone()).or_default() += fee;
        self.pending.insert(self.next, record);
        self.next += 1;
    }

    fn remove(&mut self, request_id: &str) {
        let key = self
            .pending
            .iter()
            .find(|(_, r)| r.request_id == request_id)
            .map(|(k, _)| *k);
        if let Some(record) = key.and_then(|k| self.pending.remove(&k)) {
            let fee: u128 = record.fee.parse().unwrap_or(0);
            if let Some(owed) = self.owed.get_mut(&record.account) {
                *owed = owed.saturating_sub(fee);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u8, account: &str, fee: u128) -> UsageRecord {
        UsageRecord {
            request_id: format!("0x{}", hex(&[id; 32])),
            account: account.into(),
            model_id: 1,
            prompt_tokens: 10,
            completion_tokens: 20,
            fee: fee.to_string(),
            response_hash: format!("0x{}", hex(&[0xee; 32])),
            attribution_hash: format!("0x{}", hex(&[0; 32])),
            shares: vec![],
            created: 0,
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn pending_records_survive_a_restart_and_settled_ones_do_not_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = UsageLog::open(dir.path()).unwrap();
        for i in 0..3 {
            log.record(record(i, "0xa", 100)).unwrap();
        }
        log.record(record(9, "0xb", 7)).unwrap();
        assert_eq!(log.owed("0xa"), 300);
        let first: Vec<String> = log.pending(2).into_iter().map(|r| r.request_id).collect();
        log.mark_settled(&first, "0xtx").unwrap();
        assert_eq!(log.owed("0xa"), 100);
        drop(log);

        let log = UsageLog::open(dir.path()).unwrap();
        let left = log.pending(10);
        assert_eq!(left.len(), 2);
        assert_eq!(left[0], record(2, "0xa", 100), "oldest first");
        assert_eq!((log.owed("0xa"), log.owed("0xb")), (100, 7));
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let log = UsageLog::open(dir.path()).unwrap();
        log.record(record(1, "0xa", 5)).unwrap();
        drop(log);
        let path = dir.path().join(RECORDS);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"request_id\":\"0x02").unwrap();
        drop(f);
        let log = UsageLog::open(dir.path()).unwrap();
        assert_eq!(log.pending(10).len(), 1);
        log.record(record(3, "0xa", 5)).unwrap();
        drop(log);
        let log = UsageLog::open(dir.path()).unwrap();
        assert_eq!(log.pending(10).len(), 2, "the new line is whole");
    }

    #[test]
    fn a_corrupt_line_is_an_error_naming_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RECORDS), "{}\n").unwrap();
        let err = UsageLog::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("usage.jsonl line 1"), "{err}");
    }

    #[test]
    fn fees_round_down_like_the_chain() {
        assert_eq!(
            fee(1_500, 1_000_000_000_000_000_000),
            1_500_000_000_000_000_000
        );
        assert_eq!(fee(1, 999), 0);
        assert_eq!(fee(3, 1_000), 3);
    }
}
