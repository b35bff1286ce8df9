//! Tests that need a built index: queries against brute force, the build's resume and
//! integrity checks, scoring and records.

mod build;
mod queries;
mod scoring;

use std::path::Path;

use crate::{BuildConfig, Document, Index, Vocab, build_index};

pub(crate) fn doc(
    row: u64,
    contribution: u64,
    contributor: u8,
    cluster: u64,
    tokens: &[u32],
) -> Document {
    Document {
        row_id: row,
        contribution_id: contribution,
        contributor: [contributor; 20],
        cluster_id: cluster,
        tokens: tokens.to_vec(),
    }
}

pub(crate) fn quiet(vocab: Vocab) -> BuildConfig {
    let mut config = BuildConfig::new(vocab, vec![[7; 32]]);
    config.progress = false;
    config.threads = 1;
    config
}

pub(crate) fn build_in(dir: &Path, vocab: Vocab, docs: Vec<Document>) -> Index {
    build_index(dir, &quiet(vocab), docs).expect("build");
    Index::open(dir).expect("open")
}

pub(crate) fn build(vocab: Vocab, docs: Vec<Document>) -> (tempfile::TempDir, Index) {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = build_in(dir.path(), vocab, docs);
    (dir, index)
}

/// Byte-mode documents from strings, one contribution and cluster per document.
pub(crate) fn text_docs(texts: &[&str]) -> Vec<Document> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Document::from_bytes(
                i as u64,
                100 + i as u64,
                [i as u8; 20],
                1000 + i as u64,
                t.as_bytes(),
            )
        })
        .collect()
}

pub(crate) fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(|b| b as u32).collect()
}
