//! The per-row pipeline: schema → normalisation → exact dedup → near-dup → PII → quality.
//!
//! [`Pipeline::check`] decides one row against what the datanet already holds (its accepted
//! rows) and what the same upload accepted before it, both kept in a [`DedupIndex`]. Every
//! rejection carries a [`Rejection`] a contributor can read: which check, and why.
//!
//! The pipeline is pure: the data service feeds it rows from files and stores what it accepts.

use rustc_hash::FxHashMap as HashMap;

use openledger_primitives::B256;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::merkle::row_hash;
use crate::minhash::{LshIndex, MinHashConfig, MinHasher, Signature};
use crate::pii::{self, PiiKind};
use crate::quality::{self, QualityConfig, QualityReport};
use crate::row::{Row, Schema};

/// What to do with a row that contains personal data or secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiPolicy {
    /// Replace each finding with a placeholder (`[EMAIL]`, …) and keep the row.
    Redact,
    /// Refuse the row.
    Reject,
}

/// A datanet's curation settings. They live in the datanet's description document, whose
/// hash is recorded on chain, so every node applies the same rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    pub pii: PiiPolicy,
    /// Estimated Jaccard similarity (word 5-shingles) at or above which a row is a
    /// near-duplicate of an earlier one.
    pub near_dup_threshold: f64,
    /// Rows scoring below this (0–100) are rejected.
    pub min_quality: u8,
    /// Rows longer than this many bytes are rejected before anything else is done with them.
    pub max_row_bytes: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            pii: PiiPolicy::Redact,
            near_dup_threshold: DEFAULT_NEAR_DUP_THRESHOLD,
            min_quality: 50,
            max_row_bytes: 1 << 20,
        }
    }
}

/// Default near-duplicate threshold. At 5-word shingles, editing one word in 20 already
/// changes about a quarter of a text's shingles (a Jaccard near 0.6), and appending a
/// boilerplate footer or moving a sentence lowers it further; unrelated texts on the same
/// topic stay below 0.1. 0.5 catches the first kind and is far from the second.
pub const DEFAULT_NEAR_DUP_THRESHOLD: f64 = 0.5;

/// LSH banding matched to [`DEFAULT_NEAR_DUP_THRESHOLD`]: 32 bands of 4 rows put the steep
/// part of the S-curve near 0.42, so a pair at 0.5 becomes a candidate 87 % of the time and a
/// pair at 0.6 99 % (the estimate then decides).
pub const LSH_BANDS: usize = 32;
pub const LSH_ROWS: usize = 4;

/// Why a row was refused. `code` is stable (for tools); `message` is for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
    /// For duplicates: the row it duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<B256>,
    /// For near-duplicates: the estimated Jaccard similarity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The record could not be read (bad JSON, invalid UTF-8, ragged CSV, too long).
    Unreadable,
    Schema,
    ExactDuplicate,
    NearDuplicate,
    Pii,
    LowQuality,
}

impl RejectCode {
    /// The on-chain `reasonCode` a curator's tooling uses for this rejection.
    pub fn reason_code(self) -> u16 {
        match self {
            RejectCode::Unreadable => 1,
            RejectCode::Schema => 2,
            RejectCode::ExactDuplicate => 3,
            RejectCode::NearDuplicate => 4,
            RejectCode::Pii => 5,
            RejectCode::LowQuality => 6,
        }
    }
}

impl Rejection {
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            duplicate_of: None,
            similarity: None,
        }
    }
}

/// A row that passed every check, ready to store.
#[derive(Debug, Clone)]
pub struct AcceptedRow {
    pub row: Row,
    /// The canonical JSON line (after redaction); [`AcceptedRow::hash`] is over it.
    pub canonical: String,
    pub hash: B256,
    pub signature: Signature,
    pub quality: QualityReport,
    /// Kinds of personal data replaced by placeholders, if any.
    pub redacted: Vec<PiiKind>,
}

/// Rows already held, for exact and near-duplicate checks.
#[derive(Debug, Clone)]
pub struct DedupIndex {
    exact: HashMap<B256, u64>,
    hashes: Vec<B256>,
    lsh: LshIndex,
}

impl Default for DedupIndex {
    fn default() -> Self {
        Self {
            exact: HashMap::default(),
            hashes: Vec::new(),
            lsh: LshIndex::new(LSH_BANDS, LSH_ROWS).expect("valid banding"),
        }
    }
}

impl DedupIndex {
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn contains(&self, hash: &B256) -> bool {
        self.exact.contains_key(hash)
    }

    /// Adds a row; a row already present is left as it is.
    pub fn insert(&mut self, hash: B256, signature: &Signature) {
        if self.exact.contains_key(&hash) {
            return;
        }
        let id = self.hashes.len() as u64;
        self.lsh
            .insert(id, signature)
            .expect("signatures come from the pipeline's hasher");
        self.exact.insert(hash, id);
        self.hashes.push(hash);
    }

    /// The most similar held row at or above `threshold`.
    pub fn nearest(&self, signature: &Signature, threshold: f64) -> Option<(B256, f64)> {
        self.lsh
            .best_match(signature, threshold)
            .expect("signatures come from the pipeline's hasher")
            .map(|(id, similarity)| (self.hashes[id as usize], similarity))
    }
}

/// Decides rows for one datanet.
#[derive(Debug, Clone)]
pub struct Pipeline {
    schema: Schema,
    policy: Policy,
    hasher: MinHasher,
    quality: QualityConfig,
}

impl Pipeline {
    pub fn new(schema: Schema, policy: Policy) -> Self {
        Self {
            schema,
            policy,
            hasher: MinHasher::new(MinHashConfig::default()).expect("default config is valid"),
            quality: QualityConfig::default(),
        }
    }

    pub fn schema(&self) -> Schema {
        self.schema
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The MinHash signature the pipeline uses for `row`.
    pub fn signature(&self, row: &Row) -> Signature {
        self.hasher.signature(&row.text_content())
    }

    /// Checks a parsed record. `held` are the indexes to dedup against (the datanet's
    /// accepted rows, then this upload's); the caller inserts accepted rows where it wants.
    pub fn check_json(&self, value: Value, held: &[&DedupIndex]) -> Result<AcceptedRow, Rejection> {
        let row = Row::from_json(self.schema, value)
            .map_err(|e| Rejection::new(RejectCode::Schema, e.0))?;
        self.check_row(row, held)
    }

    /// Checks a whole plain-text document (a `.txt` or `.md` file, or one CSV cell).
    pub fn check_text(&self, text: &str, held: &[&DedupIndex]) -> Result<AcceptedRow, Rejection> {
        if self.schema != Schema::Text {
            return Err(Rejection::new(
                RejectCode::Schema,
                format!(
                    "plain text can only go into a text datanet; this one expects {} rows (upload JSONL, CSV or Parquet with those fields)",
                    self.schema
                ),
            ));
        }
        let row = Row::text(text).map_err(|e| Rejection::new(RejectCode::Schema, e.0))?;
        self.check_row(row, held)
    }

    fn check_row(&self, row: Row, held: &[&DedupIndex]) -> Result<AcceptedRow, Rejection> {
        let mut row = row;
        let mut canonical = row.canonical();
        if canonical.len() > self.policy.max_row_bytes {
            return Err(Rejection::new(
                RejectCode::Unreadable,
                format!(
                    "row is {} bytes; this datanet takes rows up to {} bytes",
                    canonical.len(),
                    self.policy.max_row_bytes
                ),
            ));
        }

        // PII comes before dedup so that the stored (redacted) form is what gets deduped:
        // two rows differing only in an e-mail address are the same row once redacted.
        let text = row.text_content();
        let findings = pii::scan(&text);
        let mut redacted = Vec::new();
        if !findings.is_empty() {
            let mut kinds: Vec<PiiKind> = findings.iter().map(|f| f.kind).collect();
            kinds.sort();
            kinds.dedup();
            match self.policy.pii {
                PiiPolicy::Reject => {
                    let names: Vec<String> = kinds.iter().map(|k| kind_name(*k)).collect();
                    return Err(Rejection::new(
                        RejectCode::Pii,
                        format!(
                            "contains personal data or secrets ({}); this datanet rejects rows with PII — remove them and upload again",
                            names.join(", ")
                        ),
                    ));
                }
                PiiPolicy::Redact => {
                    row = row.map_strings(|field| pii::redact(field, &pii::scan(field)));
                    canonical = row.canonical();
                    redacted = kinds;
                }
            }
        }

        let hash = row_hash(&canonical);
        if held.iter().any(|index| index.contains(&hash)) {
            let mut rejection = Rejection::new(
                RejectCode::ExactDuplicate,
                format!("identical to row {hash} already in this datanet or upload"),
            );
            rejection.duplicate_of = Some(hash);
            return Err(rejection);
        }

        let text = row.text_content();
        let signature = self.hasher.signature(&text);
        let nearest = held
            .iter()
            .filter_map(|index| index.nearest(&signature, self.policy.near_dup_threshold))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((other, similarity)) = nearest {
            let mut rejection = Rejection::new(
                RejectCode::NearDuplicate,
                format!(
                    "near-duplicate of row {other} (estimated Jaccard {similarity:.2}, threshold {:.2})",
                    self.policy.near_dup_threshold
                ),
            );
            rejection.duplicate_of = Some(other);
            rejection.similarity = Some(similarity);
            return Err(rejection);
        }

        let quality = quality::assess(&text, &self.quality);
        if quality.score < self.policy.min_quality {
            let reasons: Vec<&str> = quality.issues.iter().map(|i| i.message.as_str()).collect();
            return Err(Rejection::new(
                RejectCode::LowQuality,
                format!(
                    "quality score {} is below this datanet's minimum {}: {}",
                    quality.score,
                    self.policy.min_quality,
                    reasons.join("; ")
                ),
            ));
        }

        Ok(AcceptedRow {
            row,
            canonical,
            hash,
            signature,
            quality,
            redacted,
        })
    }
}

fn kind_name(kind: PiiKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
        .replace('_', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PROSE: &str = "The committee reviewed the quarterly figures and agreed that the new \
        storage tier should be rolled out to every region before the end of the year, \
        provided the migration scripts pass the staging tests without manual fixes.";

    fn accept(
        pipeline: &Pipeline,
        index: &mut DedupIndex,
        value: Value,
    ) -> Result<B256, Rejection> {
        let accepted = pipeline.check_json(value, &[index])?;
        index.insert(accepted.hash, &accepted.signature);
        Ok(accepted.hash)
    }

    #[test]
    fn exact_and_near_duplicates_are_named() {
        let pipeline = Pipeline::new(Schema::Text, Policy::default());
        let mut index = DedupIndex::default();
        let first = accept(&pipeline, &mut index, json!({"text": PROSE})).unwrap();

        let exact = accept(
            &pipeline,
            &mut index,
            json!({"text": format!("  {PROSE}\r\n")}),
        )
        .unwrap_err();
        assert_eq!(exact.code, RejectCode::ExactDuplicate);
        assert_eq!(exact.duplicate_of, Some(first));

        let edited = PROSE.replace("quarterly", "annual");
        let near = accept(&pipeline, &mut index, json!({"text": edited})).unwrap_err();
        assert_eq!(near.code, RejectCode::NearDuplicate);
        assert_eq!(near.duplicate_of, Some(first));
        assert!(near.similarity.unwrap() >= 0.5, "{near:?}");
        assert!(near.message.contains("estimated Jaccard"));

        let other = "Rainfall in the northern valleys was twice the seasonal average, and the \
            river authority opened two of the flood gates early to protect the lower towns.";
        accept(&pipeline, &mut index, json!({"text": other})).unwrap();
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn pii_is_redacted_or_rejected_by_policy() {
        let text = format!("{PROSE} Contact jane.doe@example.com for the details.");
        let redacting = Pipeline::new(Schema::Text, Policy::default());
        let accepted = redacting.check_json(json!({"text": text}), &[]).unwrap();
        assert!(
            accepted.canonical.contains("[EMAIL]"),
            "{}",
            accepted.canonical
        );
        assert!(!accepted.canonical.contains("jane.doe"));
        assert_eq!(accepted.redacted, vec![PiiKind::Email]);

        let rejecting = Pipeline::new(
            Schema::Text,
            Policy {
                pii: PiiPolicy::Reject,
                ..Policy::default()
            },
        );
        let rejection = rejecting
            .check_json(json!({"text": text}), &[])
            .unwrap_err();
        assert_eq!(rejection.code, RejectCode::Pii);
        assert!(rejection.message.contains("email"), "{}", rejection.message);
    }

    #[test]
    fn low_quality_and_oversized_rows_say_why() {
        let pipeline = Pipeline::new(Schema::Text, Policy::default());
        let short = pipeline.check_json(json!({"text": "ok"}), &[]).unwrap_err();
        assert_eq!(short.code, RejectCode::LowQuality);
        assert!(short.message.contains("characters"), "{}", short.message);

        let small = Pipeline::new(
            Schema::Text,
            Policy {
                max_row_bytes: 64,
                ..Policy::default()
            },
        );
        let big = small.check_json(json!({"text": PROSE}), &[]).unwrap_err();
        assert_eq!(big.code, RejectCode::Unreadable);
        assert!(big.message.contains("up to 64 bytes"));
    }

    #[test]
    fn plain_text_needs_a_text_datanet() {
        let pipeline = Pipeline::new(Schema::Chat, Policy::default());
        let err = pipeline.check_text(PROSE, &[]).unwrap_err();
        assert_eq!(err.code, RejectCode::Schema);
        assert!(err.message.contains("expects chat rows"));
    }

    #[test]
    fn row_hash_is_the_hash_of_the_exported_line() {
        let pipeline = Pipeline::new(Schema::InstructionResponse, Policy::default());
        let accepted = pipeline
            .check_json(
                json!({"instruction": "Summarise the minutes.", "response": PROSE}),
                &[],
            )
            .unwrap();
        assert_eq!(accepted.hash, row_hash(&accepted.canonical));
    }
}
