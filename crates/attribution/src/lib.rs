//! Proof of Attribution, span path: which datanet rows a model response reproduces, and
//! what share of the response each contribution earns.
//!
//! The caller tokenizes datanet rows with the model's tokenizer (or uses byte mode, where
//! each byte of UTF-8 text is a token) and [`build_index`]es them: one suffix array over
//! all rows, built with libsais in linear time, plus a document table and unigram counts,
//! written as files with a manifest of sizes and BLAKE3 hashes. [`Index::open`] maps
//! them; queries ([`Index::count`], [`Index::occurrences`], [`Index::next_tokens`],
//! [`Index::maximal_spans`]) binary-search the mapped suffix array without decoding it.
//! [`score::attribute`] turns a response's maximal spans into shares (formula in
//! [`score`]), and [`AttributionRecord`] states them canonically so anyone holding the same
//! snapshots can [`AttributionRecord::verify`] them.
//!
//! This crate takes token ids, not text, and knows nothing of models, HTTP or the chain.
//!
//! ```
//! use openledger_attribution::{AttributionRecord, BuildConfig, Document, Index, SpanParams, Vocab, build_index};
//!
//! let dir = tempfile::tempdir()?;
//! let rows = [
//!     Document::from_bytes(1, 10, [0xaa; 20], 100, b"suffix arrays find every occurrence"),
//!     Document::from_bytes(2, 11, [0xbb; 20], 200, b"the people whose data shaped the answer"),
//! ];
//! let mut config = BuildConfig::new(Vocab::Bytes, vec![[0x51; 32]]);
//! config.progress = false;
//! build_index(dir.path(), &config, rows)?;
//!
//! let index = Index::open(dir.path())?;
//! let response: Vec<u32> = b"we know whose data shaped the answer".iter().map(|&b| b as u32).collect();
//! assert_eq!(index.count(&response[8..36]), 1);
//! let params = SpanParams { min_len: 12, max_unigram_prob: 1.0, ..SpanParams::default() };
//! let record = AttributionRecord::create(&index, [0x4d; 32], &response, params)?;
//! assert_eq!(record.contributions[0].contribution_id, 11);
//! assert_eq!(record.contributions[0].share_ppm, 1_000_000);
//! assert!(record.verify(&index, &response)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Index layout
//!
//! | file | content |
//! |---|---|
//! | `tokens.bin` | every document's tokens then the separator; 1, 2 or 4 bytes LE per token |
//! | `sa.bin` | suffix array over `tokens.bin`; each pointer `ceil(log2(N+1)/8)` bytes LE |
//! | `doc_offsets.bin` | `num_docs + 1` u64 LE: each document's first position, then `N` |
//! | `doc_meta.bin` | 44 bytes per document: row id, contribution id, cluster id (u64 LE), contributor (20 bytes) |
//! | `unigrams.bin` | 12 bytes per distinct token, by token: id (u32 LE), count (u64 LE) |
//! | `manifest.json` | format and version, vocabulary, widths, counts, snapshot roots, size and BLAKE3 of each file |
//!
//! # Benchmark
//!
//! `src/bin/attribution-bench.rs` builds a byte-level index over ≥ 100 MB of source files
//! and runs the same queries through infini-gram (`bench/infinigram_bench.py`):
//!
//! ```text
//! python3 -m venv ~/.cache/openledger/venv-infinigram
//! ~/.cache/openledger/venv-infinigram/bin/pip install infini-gram numpy tqdm transformers
//! RUSTFLAGS="-C target-cpu=native" cargo run --release -p openledger-attribution \
//!     --bin attribution-bench -- --mb 100 --work /tmp/attr-bench
//! ```
//!
//! It prints build time, peak RSS, index bytes per token, count and occurrence latency
//! (p50/p99) and per-response attribution time for both, with ratios, and checks that both
//! engines agree on every count, on the longest match at every response position (their
//! `creativity`) and on the maximal spans (their `attribute`); then it deletes its corpus
//! and indexes (`--keep` keeps them). infini-gram starts a thread per query, so on a loaded
//! machine its latencies measure mostly scheduling; compare build figures and
//! ANCHORS.md's quiet-machine latencies too.

pub mod build;
pub mod detmath;
mod error;
pub mod format;
pub mod gradient;
mod hexser;
pub mod index;
pub mod record;
pub mod score;

pub use build::{BuildConfig, BuildReport, Document, build_index};
pub use error::{Error, Result};
pub use format::{Manifest, Vocab};
pub use gradient::{GradientParams, GradientRecord, METHOD_GRADIENT_DATAINF_V1};
pub use index::{DocInfo, Index, LongestMatch, NextTokens, Occurrence, SaRange, Span};
pub use record::{AttributionRecord, METHOD_SPAN_V1, response_hash};
pub use score::{Attribution, ContributionShare, ScoredSpan, SpanParams, attribute};

#[cfg(test)]
mod tests;
