//! The on-disk layout of an index: file names, record sizes, the manifest, and the two
//! primitives every file goes through (atomic hashed writes, read-only maps).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io_error};

/// `manifest.json`'s `format` field.
pub const FORMAT_NAME: &str = "openledger-span-index";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The manifest file name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The concatenated corpus: each document's tokens followed by the separator.
pub const TOKENS_FILE: &str = "tokens.bin";
/// The suffix array: one pointer per token position, `pointer_width` bytes LE each.
pub const SA_FILE: &str = "sa.bin";
/// `num_docs + 1` u64 LE: the start of each document in `tokens.bin`, then its length.
pub const DOC_OFFSETS_FILE: &str = "doc_offsets.bin";
/// `num_docs` records of [`DOC_META_BYTES`]: row id, contribution id, cluster id (u64 LE), contributor (20 bytes).
pub const DOC_META_FILE: &str = "doc_meta.bin";
/// `num_unigrams` records of [`UNIGRAM_BYTES`]: token (u32 LE), count (u64 LE), sorted by token.
pub const UNIGRAMS_FILE: &str = "unigrams.bin";

/// Bytes per record in [`DOC_META_FILE`].
pub const DOC_META_BYTES: usize = 44;
/// Bytes per record in [`UNIGRAMS_FILE`].
pub const UNIGRAM_BYTES: usize = 12;

/// The files a finished index holds besides the manifest, in build order.
pub const INDEX_FILES: [&str; 5] = [
    TOKENS_FILE,
    DOC_OFFSETS_FILE,
    DOC_META_FILE,
    UNIGRAMS_FILE,
    SA_FILE,
];

/// What a token is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Vocab {
    /// Each byte of UTF-8 text is a token (ids 0..=254); 0xFF, which UTF-8 never uses, separates documents.
    Bytes,
    /// Token ids `0..size` from the model's tokenizer. Stored as u16 when `size ≤ 65535`
    /// (the separator is 65535), else as u32 (the separator is `u32::MAX`).
    Tokens {
        /// One past the largest token id.
        size: u32,
    },
}

impl Vocab {
    /// Bytes per stored token.
    pub fn token_width(&self) -> usize {
        match self {
            Vocab::Bytes => 1,
            Vocab::Tokens { size } if *size <= u16::MAX as u32 => 2,
            Vocab::Tokens { .. } => 4,
        }
    }

    /// The document separator: the largest value of the storage width, never a valid token.
    pub fn separator(&self) -> u32 {
        match self.token_width() {
            1 => u8::MAX as u32,
            2 => u16::MAX as u32,
            _ => u32::MAX,
        }
    }

    /// How many token ids there are (`V` in the add-one smoothing of unigram probabilities).
    pub fn size(&self) -> u64 {
        match self {
            Vocab::Bytes => 255,
            Vocab::Tokens { size } => *size as u64,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        match self {
            Vocab::Tokens { size: 0 } => Err(Error::Config("vocabulary size 0".into())),
            _ => Ok(()),
        }
    }
}

/// Pointer width in bytes for a corpus of `n` token positions: `ceil(log2(n + 1) / 8)`, at least 1.
pub fn pointer_width(n: u64) -> usize {
    let bits = 64 - n.leading_zeros() as usize; // bits to write any value 0..=n
    bits.div_ceil(8).max(1)
}

/// Size and BLAKE3 of one index file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Length in bytes.
    pub bytes: u64,
    /// BLAKE3 of the whole file, hex.
    pub blake3: String,
}

/// `manifest.json`: what the index holds and how to check its files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written.
    pub version: u32,
    /// False while a build is under way (then the files listed are the steps done so far).
    pub complete: bool,
    /// The token vocabulary.
    pub vocab: Vocab,
    /// Bytes per stored token.
    pub token_width: usize,
    /// Bytes per suffix-array pointer.
    pub pointer_width: usize,
    /// The separator token value.
    pub separator: u32,
    /// Positions in `tokens.bin`, separators included (`N`).
    pub num_tokens: u64,
    /// Documents.
    pub num_docs: u64,
    /// Non-separator tokens (`T` in the unigram probabilities).
    pub corpus_tokens: u64,
    /// Distinct tokens in the corpus (records in `unigrams.bin`).
    pub num_unigrams: u64,
    /// The datanet snapshot roots the documents come from.
    #[serde(with = "crate::hexser::array_vec")]
    pub snapshot_roots: Vec<[u8; 32]>,
    /// Every file written so far, by name.
    pub files: BTreeMap<String, FileEntry>,
}

impl Manifest {
    /// The byte length each file must have, from the counts alone (`None` for other names
    /// or counts too large to be real).
    pub fn expected_size(&self, file: &str) -> Option<u64> {
        match file {
            TOKENS_FILE => self.num_tokens.checked_mul(self.token_width as u64),
            SA_FILE => self.num_tokens.checked_mul(self.pointer_width as u64),
            DOC_OFFSETS_FILE => self.num_docs.checked_add(1)?.checked_mul(8),
            DOC_META_FILE => self.num_docs.checked_mul(DOC_META_BYTES as u64),
            UNIGRAMS_FILE => self.num_unigrams.checked_mul(UNIGRAM_BYTES as u64),
            _ => None,
        }
    }

    pub(crate) fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = fs::read(&path).map_err(io_error(&path))?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
                path: path.clone(),
                reason: format!("not JSON: {e}"),
            })?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
            return Err(Error::Manifest {
                path,
                reason: format!("format is not {FORMAT_NAME:?}"),
            });
        }
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != FORMAT_VERSION as u64 {
            return Err(Error::Version {
                path,
                found: version.min(u32::MAX as u64) as u32,
                expected: FORMAT_VERSION,
            });
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| Error::Manifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| Error::Manifest {
            path: path.clone(),
            reason,
        };
        if manifest.token_width != manifest.vocab.token_width() {
            return Err(bad(format!(
                "token width {} does not fit vocabulary {:?}",
                manifest.token_width, manifest.vocab
            )));
        }
        if manifest.separator != manifest.vocab.separator() {
            return Err(bad(format!(
                "separator {} is not the vocabulary's",
                manifest.separator
            )));
        }
        if manifest.pointer_width != pointer_width(manifest.num_tokens) {
            return Err(bad(format!(
                "pointer width {} does not fit {} tokens",
                manifest.pointer_width, manifest.num_tokens
            )));
        }
        if Some(manifest.num_tokens) != manifest.corpus_tokens.checked_add(manifest.num_docs) {
            return Err(bad("num_tokens is not corpus_tokens + num_docs".into()));
        }
        Ok(manifest)
    }

    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("the manifest always serialises");
        let mut w = AtomicFile::create(dir, MANIFEST_FILE)?;
        w.write(&json)?;
        w.finish()?;
        Ok(())
    }
}

/// A file written as `name.tmp`, hashed while written, then fsynced and renamed into place,
/// so a reader sees the whole file or none.
pub(crate) struct AtomicFile {
    dir: PathBuf,
    name: String,
    tmp: PathBuf,
    out: BufWriter<File>,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl AtomicFile {
    pub(crate) fn create(dir: &Path, name: &str) -> Result<AtomicFile> {
        let tmp = dir.join(format!("{name}.tmp"));
        let file = File::create(&tmp).map_err(io_error(&tmp))?;
        Ok(AtomicFile {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            tmp,
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
            bytes: 0,
        })
    }

    pub(crate) fn write(&mut self, buf: &[u8]) -> Result<()> {
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        self.out.write_all(buf).map_err(io_error(&self.tmp))
    }

    pub(crate) fn finish(self) -> Result<FileEntry> {
        let file = self.out.into_inner().map_err(|e| Error::Io {
            path: self.tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_error(&self.tmp))?;
        drop(file);
        let dest = self.dir.join(&self.name);
        fs::rename(&self.tmp, &dest).map_err(io_error(&dest))?;
        sync_dir(&self.dir)?;
        Ok(FileEntry {
            bytes: self.bytes,
            blake3: self.hasher.finalize().to_hex().to_string(),
        })
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// BLAKE3 of a whole file, hex.
pub(crate) fn hash_file(path: &Path) -> Result<String> {
    let map = map_file(path)?;
    Ok(blake3::hash(&map).to_hex().to_string())
}

/// Map an index file read-only.
#[allow(unsafe_code)]
pub(crate) fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = File::open(path).map_err(io_error(path))?;
    // SAFETY: the map is read-only and index files are immutable once built: every file is
    // written under a temporary name and renamed into place, never modified after; the size
    // of each file is checked against the manifest before any query reads it, and
    // `Index::verify` checks their BLAKE3. What the map cannot rule out is another process
    // truncating the file while it is mapped (SIGBUS); index directories are owned by the
    // node and nothing rewrites them.
    unsafe { memmap2::Mmap::map(&file) }.map_err(io_error(path))
}
