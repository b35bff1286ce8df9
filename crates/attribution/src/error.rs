//! The crate's one error type: every variant names the file or the input that was wrong.

use std::path::PathBuf;

/// What can go wrong building, opening or querying an index, or checking a record.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `manifest.json` is missing, unreadable or says something inconsistent.
    #[error("{path}: bad index manifest: {reason}")]
    Manifest {
        /// The manifest's path.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The index was written by another format version of this crate.
    #[error("{path}: index format version {found}, this build reads version {expected}")]
    Version {
        /// The manifest's path.
        path: PathBuf,
        /// The version the manifest records.
        found: u32,
        /// The version this code reads and writes.
        expected: u32,
    },
    /// The manifest says the build has not finished.
    #[error("{path}: the index build has not finished (run the build again to resume it)")]
    Incomplete {
        /// The manifest's path.
        path: PathBuf,
    },
    /// An index file has another size than the manifest records (truncated or extended).
    #[error("{path}: {found} bytes, the manifest expects {expected} (truncated or replaced file)")]
    FileSize {
        /// The index file.
        path: PathBuf,
        /// The size the manifest (and the counts in it) imply.
        expected: u64,
        /// The size on disk.
        found: u64,
    },
    /// An index file's BLAKE3 differs from the one in the manifest (modified file).
    #[error("{path}: BLAKE3 {found}, the manifest records {expected} (modified file)")]
    FileHash {
        /// The index file.
        path: PathBuf,
        /// The hash in the manifest (hex).
        expected: String,
        /// The hash of the file on disk (hex).
        found: String,
    },
    /// A document holds a token the vocabulary does not allow (the separator or ≥ vocab size).
    #[error(
        "document row {row_id}: token {token} at offset {offset} is outside the vocabulary (valid ids are 0..{limit})"
    )]
    TokenOutOfRange {
        /// The document's row id.
        row_id: u64,
        /// The offending token.
        token: u32,
        /// Its offset in the document.
        offset: usize,
        /// One past the largest valid id.
        limit: u64,
    },
    /// Two documents name the same contribution with different contributors.
    #[error(
        "contribution {contribution_id}: row {row_id} names another contributor than an earlier row"
    )]
    ContributorConflict {
        /// The contribution id.
        contribution_id: u64,
        /// The row that disagreed.
        row_id: u64,
    },
    /// A build parameter is out of range.
    #[error("invalid index configuration: {0}")]
    Config(String),
    /// libsais refused the input or ran out of memory.
    #[error("suffix array construction failed: {0}")]
    SuffixArray(String),
    /// Scoring parameters out of range.
    #[error("invalid attribution parameters: {0}")]
    Params(String),
    /// A canonical record encoding that does not decode.
    #[error("bad attribution record encoding: {0}")]
    Record(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
