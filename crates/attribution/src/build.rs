//! Building an index: documents in, the files of [`crate::format`] out.
//!
//! Two steps, each resumable. **corpus** streams the documents once: every document's tokens
//! followed by the separator go to `tokens.bin`, its start offset and ids to the doc table,
//! and its tokens into the unigram counts. **suffix_array** maps `tokens.bin` back and sorts
//! all suffixes with libsais (SA-IS, linear time; 32-bit pointers up to 2³¹ positions,
//! 64-bit beyond), then packs each pointer into `ceil(log2(N+1)/8)` bytes.
//!
//! After each step the manifest is rewritten (`complete: false` until the last step) with
//! each file's size and BLAKE3. A build started again on the same directory with the same
//! vocabulary and snapshot roots skips every step whose files are still there and hash to
//! what the manifest records; anything else is rebuilt. The documents are identified by the
//! snapshot roots: resuming with other documents under the same roots is the caller's error.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use libsais::{SuffixArrayConstruction, ThreadCount};
use rustc_hash::FxHashMap;

use crate::error::{Error, Result, io_error};
use crate::format::{
    AtomicFile, DOC_META_BYTES, DOC_META_FILE, DOC_OFFSETS_FILE, FORMAT_NAME, FORMAT_VERSION,
    INDEX_FILES, MANIFEST_FILE, Manifest, SA_FILE, TOKENS_FILE, UNIGRAM_BYTES, UNIGRAMS_FILE,
    Vocab, hash_file, map_file, pointer_width,
};

/// Files the corpus step writes.
const CORPUS_FILES: [&str; 4] = [TOKENS_FILE, DOC_OFFSETS_FILE, DOC_META_FILE, UNIGRAMS_FILE];

/// One row of a datanet snapshot, tokenized by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The row's id in the snapshot.
    pub row_id: u64,
    /// The contribution the row came in with.
    pub contribution_id: u64,
    /// The contributor's address.
    pub contributor: [u8; 20],
    /// The exact/near-duplicate cluster of the row (equal for copies); attribution is shared
    /// per cluster first, so copies earn nothing extra.
    pub cluster_id: u64,
    /// Token ids, each below the vocabulary's size (in byte mode: the bytes, never 0xFF).
    pub tokens: Vec<u32>,
}

impl Document {
    /// A byte-mode document: each byte of `text` is a token.
    pub fn from_bytes(
        row_id: u64,
        contribution_id: u64,
        contributor: [u8; 20],
        cluster_id: u64,
        text: &[u8],
    ) -> Document {
        Document {
            row_id,
            contribution_id,
            contributor,
            cluster_id,
            tokens: text.iter().map(|&b| b as u32).collect(),
        }
    }
}

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// Token vocabulary (fixes token width and separator).
    pub vocab: Vocab,
    /// The datanet snapshots the documents come from; recorded in the manifest and in every
    /// attribution record, and the identity of the input when a build is resumed.
    pub snapshot_roots: Vec<[u8; 32]>,
    /// Show progress bars on stderr (only when it is a terminal).
    pub progress: bool,
    /// libsais threads (OpenMP); 0 = OpenMP's default (every core). Default 1: OpenMP
    /// threads spin at barriers, and on a shared 2-core machine under load that made the
    /// 100 MB sort take 35 s with 2 threads against 6 s with one.
    pub threads: u16,
}

impl BuildConfig {
    /// A configuration with progress shown and a single-threaded sort.
    pub fn new(vocab: Vocab, snapshot_roots: Vec<[u8; 32]>) -> BuildConfig {
        BuildConfig {
            vocab,
            snapshot_roots,
            progress: true,
            threads: 1,
        }
    }
}

/// What a build did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildReport {
    /// The corpus step's files were already there and intact.
    pub corpus_skipped: bool,
    /// The suffix array was already there and intact.
    pub suffix_array_skipped: bool,
    /// Token positions (separators included).
    pub num_tokens: u64,
    /// Documents.
    pub num_docs: u64,
    /// Time spent in the corpus step (zero when skipped).
    pub corpus_time: Duration,
    /// Time libsais took to sort the suffixes (zero when skipped).
    pub sort_time: Duration,
    /// Time spent packing and writing `sa.bin` (zero when skipped).
    pub write_time: Duration,
}

/// Build (or finish building) the index in `dir` from `docs`.
///
/// `docs` is consumed only if the corpus step has to run. Errors name the document or file
/// that was wrong; a failed build leaves a directory that the next call resumes.
pub fn build_index<I>(dir: &Path, config: &BuildConfig, docs: I) -> Result<BuildReport>
where
    I: IntoIterator<Item = Document>,
{
    config.vocab.check()?;
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;

    let prior = Manifest::read(dir)
        .ok()
        .filter(|m| m.vocab == config.vocab && m.snapshot_roots == config.snapshot_roots);
    let mut manifest = match prior {
        Some(m) if files_intact(dir, &m, &CORPUS_FILES)? => Some(m),
        _ => None,
    };
    if manifest.is_none() {
        remove_stale(dir)?;
    }
    let corpus_skipped = manifest.is_some();
    let started = Instant::now();
    let mut manifest = match manifest.take() {
        Some(m) => m,
        None => {
            let m = corpus_step(dir, config, docs)?;
            m.write(dir)?;
            m
        }
    };
    let corpus_time = if corpus_skipped {
        Duration::ZERO
    } else {
        started.elapsed()
    };
    let (mut sort_time, mut write_time) = (Duration::ZERO, Duration::ZERO);

    let suffix_array_skipped = manifest.complete && files_intact(dir, &manifest, &[SA_FILE])?;
    if !suffix_array_skipped {
        manifest.complete = false;
        manifest.files.remove(SA_FILE);
        let (entry, sort, write) = suffix_array_step(dir, &manifest, config)?;
        (sort_time, write_time) = (sort, write);
        manifest.files.insert(SA_FILE.to_string(), entry);
        manifest.complete = true;
        manifest.write(dir)?;
    }
    Ok(BuildReport {
        corpus_skipped,
        suffix_array_skipped,
        num_tokens: manifest.num_tokens,
        num_docs: manifest.num_docs,
        corpus_time,
        sort_time,
        write_time,
    })
}

/// Whether every one of `files` is recorded in `m`, has the recorded and expected size, and
/// hashes to the recorded BLAKE3.
fn files_intact(dir: &Path, m: &Manifest, files: &[&str]) -> Result<bool> {
    for &name in files {
        let Some(entry) = m.files.get(name) else {
            return Ok(false);
        };
        if m.expected_size(name) != Some(entry.bytes) {
            return Ok(false);
        }
        let path = dir.join(name);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == entry.bytes => {}
            _ => return Ok(false),
        }
        if hash_file(&path)? != entry.blake3 {
            return Ok(false);
        }
    }
    Ok(true)
}

fn remove_stale(dir: &Path) -> Result<()> {
    for name in INDEX_FILES.iter().chain([&MANIFEST_FILE]) {
        for path in [dir.join(name), dir.join(format!("{name}.tmp"))] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Io { path, source: e }),
            }
        }
    }
    Ok(())
}

fn progress_bar(config: &BuildConfig, len: Option<u64>, what: &'static str) -> ProgressBar {
    if !config.progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template(
                "{msg:>14} [{bar:40}] {percent:>3}% {elapsed} (eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template(
                "{spinner} {msg:>14} {human_pos} tokens, {per_sec} {elapsed}",
            )
            .expect("valid template"),
        ),
    };
    bar.set_message(what);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Unigram counts: dense for byte and u16 vocabularies, a map for u32 ones.
enum Counts {
    Dense(Vec<u64>),
    Sparse(FxHashMap<u32, u64>),
}

fn corpus_step<I>(dir: &Path, config: &BuildConfig, docs: I) -> Result<Manifest>
where
    I: IntoIterator<Item = Document>,
{
    let vocab = &config.vocab;
    let width = vocab.token_width();
    let sep = vocab.separator();
    let limit = vocab.size();
    let bar = progress_bar(config, None, "corpus");

    let mut tokens_out = AtomicFile::create(dir, TOKENS_FILE)?;
    let mut meta_out = AtomicFile::create(dir, DOC_META_FILE)?;
    let mut offsets: Vec<u64> = Vec::new();
    let mut counts = if width <= 2 {
        Counts::Dense(vec![0; sep as usize + 1])
    } else {
        Counts::Sparse(FxHashMap::default())
    };
    let mut contributors: FxHashMap<u64, [u8; 20]> = FxHashMap::default();
    let mut pos: u64 = 0;
    let mut buf: Vec<u8> = Vec::new();

    for doc in docs {
        if let Some((offset, &token)) = doc
            .tokens
            .iter()
            .enumerate()
            .find(|&(_, &t)| t as u64 >= limit)
        {
            return Err(Error::TokenOutOfRange {
                row_id: doc.row_id,
                token,
                offset,
                limit,
            });
        }
        let known = contributors
            .entry(doc.contribution_id)
            .or_insert(doc.contributor);
        if *known != doc.contributor {
            return Err(Error::ContributorConflict {
                contribution_id: doc.contribution_id,
                row_id: doc.row_id,
            });
        }
        offsets.push(pos);
        buf.clear();
        for &t in doc.tokens.iter().chain(std::iter::once(&sep)) {
            match width {
                1 => buf.push(t as u8),
                2 => buf.extend_from_slice(&(t as u16).to_le_bytes()),
                _ => buf.extend_from_slice(&t.to_le_bytes()),
            }
        }
        tokens_out.write(&buf)?;
        match &mut counts {
            Counts::Dense(c) => doc.tokens.iter().for_each(|&t| c[t as usize] += 1),
            Counts::Sparse(c) => doc
                .tokens
                .iter()
                .for_each(|&t| *c.entry(t).or_insert(0) += 1),
        }
        let mut meta = [0u8; DOC_META_BYTES];
        meta[0..8].copy_from_slice(&doc.row_id.to_le_bytes());
        meta[8..16].copy_from_slice(&doc.contribution_id.to_le_bytes());
        meta[16..24].copy_from_slice(&doc.cluster_id.to_le_bytes());
        meta[24..44].copy_from_slice(&doc.contributor);
        meta_out.write(&meta)?;
        pos += doc.tokens.len() as u64 + 1;
        bar.inc(doc.tokens.len() as u64 + 1);
    }
    let num_docs = offsets.len() as u64;
    offsets.push(pos);

    let mut files = std::collections::BTreeMap::new();
    files.insert(TOKENS_FILE.to_string(), tokens_out.finish()?);
    files.insert(DOC_META_FILE.to_string(), meta_out.finish()?);

    let mut offsets_out = AtomicFile::create(dir, DOC_OFFSETS_FILE)?;
    for chunk in offsets.chunks(1 << 16) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|o| o.to_le_bytes()).collect();
        offsets_out.write(&bytes)?;
    }
    files.insert(DOC_OFFSETS_FILE.to_string(), offsets_out.finish()?);

    let mut unigrams: Vec<(u32, u64)> = match counts {
        Counts::Dense(c) => c
            .into_iter()
            .enumerate()
            .filter(|&(_, n)| n > 0)
            .map(|(t, n)| (t as u32, n))
            .collect(),
        Counts::Sparse(c) => c.into_iter().collect(),
    };
    unigrams.sort_unstable();
    let mut unigrams_out = AtomicFile::create(dir, UNIGRAMS_FILE)?;
    for chunk in unigrams.chunks(1 << 16) {
        let mut bytes = Vec::with_capacity(chunk.len() * UNIGRAM_BYTES);
        for &(t, n) in chunk {
            bytes.extend_from_slice(&t.to_le_bytes());
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        unigrams_out.write(&bytes)?;
    }
    files.insert(UNIGRAMS_FILE.to_string(), unigrams_out.finish()?);
    bar.finish_and_clear();

    Ok(Manifest {
        format: FORMAT_NAME.to_string(),
        version: FORMAT_VERSION,
        complete: false,
        vocab: vocab.clone(),
        token_width: width,
        pointer_width: pointer_width(pos),
        separator: sep,
        num_tokens: pos,
        num_docs,
        corpus_tokens: pos - num_docs,
        num_unigrams: unigrams.len() as u64,
        snapshot_roots: config.snapshot_roots.clone(),
        files,
    })
}

/// A suffix array as libsais returns it.
enum RawSa {
    I32(Vec<i32>),
    I64(Vec<i64>),
}

/// Largest text libsais sorts with 32-bit pointers here (leaves room for its extra space).
const MAX_I32_TEXT: u64 = (i32::MAX as u64) - (1 << 20);

fn thread_count(threads: u16) -> ThreadCount {
    if threads == 0 {
        ThreadCount::openmp_default()
    } else {
        ThreadCount::fixed(threads)
    }
}

fn sa_error(e: libsais::LibsaisError) -> Error {
    Error::SuffixArray(e.to_string())
}

/// Sort, then write; returns the file entry and the time of each part.
fn suffix_array_step(
    dir: &Path,
    m: &Manifest,
    config: &BuildConfig,
) -> Result<(crate::format::FileEntry, Duration, Duration)> {
    let started = Instant::now();
    let n = m.num_tokens;
    let threads = thread_count(config.threads);
    let bar = progress_bar(config, None, "suffix array");
    let tokens = map_file(&dir.join(TOKENS_FILE))?;
    let small = n <= MAX_I32_TEXT;
    let raw = if n == 0 {
        RawSa::I32(Vec::new())
    } else {
        match m.token_width {
            1 => {
                let text: &[u8] = &tokens;
                if small {
                    let sa = SuffixArrayConstruction::for_text(text)
                        .in_owned_buffer32()
                        .multi_threaded(threads)
                        .run()
                        .map_err(sa_error)?;
                    RawSa::I32(sa.into_vec())
                } else {
                    let sa = SuffixArrayConstruction::for_text(text)
                        .in_owned_buffer64()
                        .multi_threaded(threads)
                        .run()
                        .map_err(sa_error)?;
                    RawSa::I64(sa.into_vec())
                }
            }
            2 => {
                let text: Vec<u16> = tokens
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect();
                if small {
                    let sa = SuffixArrayConstruction::for_text(&text)
                        .in_owned_buffer32()
                        .multi_threaded(threads)
                        .run()
                        .map_err(sa_error)?;
                    RawSa::I32(sa.into_vec())
                } else {
                    let sa = SuffixArrayConstruction::for_text(&text)
                        .in_owned_buffer64()
                        .multi_threaded(threads)
                        .run()
                        .map_err(sa_error)?;
                    RawSa::I64(sa.into_vec())
                }
            }
            _ => {
                // Large vocabularies: libsais's integer variant needs values in [0, k) with k
                // small, so the distinct tokens are ranked (order-preserving, hence the same
                // suffix order) with the separator last.
                let unigrams = map_file(&dir.join(UNIGRAMS_FILE))?;
                let distinct: Vec<u32> = unigrams
                    .chunks_exact(UNIGRAM_BYTES)
                    .map(|r| u32::from_le_bytes([r[0], r[1], r[2], r[3]]))
                    .collect();
                let rank = |t: u32| -> u64 {
                    if t == m.separator {
                        distinct.len() as u64
                    } else {
                        distinct.partition_point(|&d| d < t) as u64
                    }
                };
                let words = tokens
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                if small {
                    let mut text: Vec<i32> = words.map(|t| rank(t) as i32).collect();
                    let sa = SuffixArrayConstruction::for_text_mut(&mut text)
                        .in_owned_buffer32()
                        .multi_threaded(threads)
                        .run()
                        .map_err(sa_error)?;
                    RawSa::I32(sa.into_vec())
                } else {
                    let mut text: Vec<i64> = words.map(|t| rank(t) as i64).collect();
                    let sa = SuffixArrayConstruction::for_text_mut(&mut text)
                        .in_owned_buffer64()
                        .multi_threaded(threads)
                        .run()
                        .map_err(sa_error)?;
                    RawSa::I64(sa.into_vec())
                }
            }
        }
    };
    drop(tokens);
    bar.finish_and_clear();
    let sort_time = started.elapsed();
    let started = Instant::now();

    let bar = progress_bar(config, Some(n), "write SA");
    let width = m.pointer_width;
    let mut out = AtomicFile::create(dir, SA_FILE)?;
    let mut buf: Vec<u8> = Vec::with_capacity((1 << 16) * width);
    let mut flush = |values: &mut dyn Iterator<Item = u64>, out: &mut AtomicFile| -> Result<()> {
        buf.clear();
        for v in values {
            buf.extend_from_slice(&v.to_le_bytes()[..width]);
        }
        out.write(&buf)
    };
    match &raw {
        RawSa::I32(sa) => {
            for chunk in sa.chunks(1 << 16) {
                flush(&mut chunk.iter().map(|&v| v as u64), &mut out)?;
                bar.inc(chunk.len() as u64);
            }
        }
        RawSa::I64(sa) => {
            for chunk in sa.chunks(1 << 16) {
                flush(&mut chunk.iter().map(|&v| v as u64), &mut out)?;
                bar.inc(chunk.len() as u64);
            }
        }
    }
    bar.finish_and_clear();
    let entry = out.finish()?;
    Ok((entry, sort_time, started.elapsed()))
}
