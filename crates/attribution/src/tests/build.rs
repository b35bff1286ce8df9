use std::fs;
use std::path::Path;

use super::{build, build_in, doc, quiet, text_docs};
use crate::{Document, Error, Index, Vocab, build_index};

fn corpus() -> Vec<Document> {
    text_docs(&[
        "the quick brown fox",
        "jumps over the lazy dog",
        "",
        "the end",
    ])
}

fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn resumed_build_equals_fresh_build() {
    let fresh = tempfile::tempdir().unwrap();
    build_in(fresh.path(), Vocab::Bytes, corpus());

    // A build interrupted after the corpus step: no suffix array, manifest not complete.
    let resumed = tempfile::tempdir().unwrap();
    build_in(resumed.path(), Vocab::Bytes, corpus());
    fs::remove_file(resumed.path().join("sa.bin")).unwrap();
    let manifest_path = resumed.path().join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    m["complete"] = false.into();
    m["files"].as_object_mut().unwrap().remove("sa.bin");
    fs::write(&manifest_path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    assert!(matches!(
        Index::open(resumed.path()),
        Err(Error::Incomplete { .. })
    ));

    // Resuming must not read the documents again.
    let untouched = std::iter::from_fn(|| -> Option<Document> { panic!("corpus step re-ran") });
    let report = build_index(resumed.path(), &quiet(Vocab::Bytes), untouched).unwrap();
    assert!(report.corpus_skipped && !report.suffix_array_skipped);
    assert_eq!(read_all(fresh.path()), read_all(resumed.path()));

    // A finished index is left alone.
    let untouched = std::iter::from_fn(|| -> Option<Document> { panic!("corpus step re-ran") });
    let report = build_index(resumed.path(), &quiet(Vocab::Bytes), untouched).unwrap();
    assert!(report.corpus_skipped && report.suffix_array_skipped);

    // A damaged corpus file is rebuilt, not trusted.
    let tokens = resumed.path().join("tokens.bin");
    let mut bytes = fs::read(&tokens).unwrap();
    bytes[0] ^= 1;
    fs::write(&tokens, bytes).unwrap();
    let report = build_index(resumed.path(), &quiet(Vocab::Bytes), corpus()).unwrap();
    assert!(!report.corpus_skipped && !report.suffix_array_skipped);
    assert_eq!(read_all(fresh.path()), read_all(resumed.path()));

    // Other snapshot roots mean other input: everything is rebuilt.
    let mut other = quiet(Vocab::Bytes);
    other.snapshot_roots = vec![[9; 32]];
    let report = build_index(resumed.path(), &other, corpus()).unwrap();
    assert!(!report.corpus_skipped);
}

#[test]
fn truncated_file_is_refused_naming_it() {
    let (dir, index) = build(Vocab::Bytes, corpus());
    drop(index);
    let sa = dir.path().join("sa.bin");
    let len = fs::metadata(&sa).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&sa)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let err = Index::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::FileSize { found, expected, .. } if found == len - 3 && expected == len),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("sa.bin") && message.contains("truncated"),
        "{message}"
    );
}

#[test]
fn modified_file_fails_verification_naming_it() {
    let (dir, index) = build(Vocab::Bytes, corpus());
    index.verify().unwrap();
    drop(index);
    let meta = dir.path().join("doc_meta.bin");
    let mut bytes = fs::read(&meta).unwrap();
    bytes[5] ^= 0x40;
    fs::write(&meta, bytes).unwrap();
    let index = Index::open(dir.path()).expect("sizes still match");
    let err = index.verify().unwrap_err();
    assert!(matches!(err, Error::FileHash { .. }), "{err}");
    assert!(err.to_string().contains("doc_meta.bin"), "{err}");
    assert!(Index::open_verified(dir.path()).is_err());
}

#[test]
fn wrong_version_missing_file_and_garbage_manifest_are_refused() {
    let (dir, index) = build(Vocab::Bytes, corpus());
    drop(index);
    let manifest_path = dir.path().join("manifest.json");
    let original = fs::read(&manifest_path).unwrap();

    let mut m: serde_json::Value = serde_json::from_slice(&original).unwrap();
    m["version"] = 99.into();
    fs::write(&manifest_path, serde_json::to_vec(&m).unwrap()).unwrap();
    let err = Index::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Version {
                found: 99,
                expected: 1,
                ..
            }
        ),
        "{err}"
    );

    let mut m: serde_json::Value = serde_json::from_slice(&original).unwrap();
    m["pointer_width"] = 7.into();
    fs::write(&manifest_path, serde_json::to_vec(&m).unwrap()).unwrap();
    let err = Index::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("pointer width"), "{err}");

    // Absurd counts are refused, not multiplied into an overflow.
    let mut m: serde_json::Value = serde_json::from_slice(&original).unwrap();
    m["num_docs"] = u64::MAX.into();
    m["num_unigrams"] = u64::MAX.into();
    fs::write(&manifest_path, serde_json::to_vec(&m).unwrap()).unwrap();
    assert!(matches!(
        Index::open(dir.path()),
        Err(Error::Manifest { .. })
    ));
    let mut m: serde_json::Value = serde_json::from_slice(&original).unwrap();
    m["num_unigrams"] = u64::MAX.into();
    fs::write(&manifest_path, serde_json::to_vec(&m).unwrap()).unwrap();
    let err = Index::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("unigrams.bin"), "{err}");

    fs::write(&manifest_path, b"{ not json").unwrap();
    let err = Index::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Manifest { .. }) && err.to_string().contains("manifest.json"),
        "{err}"
    );

    fs::write(&manifest_path, &original).unwrap();
    fs::remove_file(dir.path().join("unigrams.bin")).unwrap();
    let err = Index::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Io { .. }) && err.to_string().contains("unigrams.bin"),
        "{err}"
    );
}

#[test]
fn documents_outside_the_vocabulary_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = build_index(
        dir.path(),
        &quiet(Vocab::Bytes),
        vec![doc(5, 1, 1, 1, &[1, 255])],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TokenOutOfRange {
                row_id: 5,
                token: 255,
                offset: 1,
                limit: 255
            }
        ),
        "{err}"
    );
    let err = build_index(
        dir.path(),
        &quiet(Vocab::Tokens { size: 10 }),
        vec![doc(5, 1, 1, 1, &[10])],
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::TokenOutOfRange { token: 10, .. }),
        "{err}"
    );
    let err = build_index(
        dir.path(),
        &quiet(Vocab::Tokens { size: 10 }),
        vec![doc(1, 7, 1, 1, &[1]), doc(2, 7, 2, 1, &[2])],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ContributorConflict {
                contribution_id: 7,
                row_id: 2
            }
        ),
        "{err}"
    );
    assert!(build_index(dir.path(), &quiet(Vocab::Tokens { size: 0 }), Vec::new()).is_err());
}

#[test]
fn doc_table_round_trips() {
    let docs = corpus();
    let (_dir, index) = build(Vocab::Bytes, docs.clone());
    for (i, d) in docs.iter().enumerate() {
        let info = index.doc(i as u64);
        assert_eq!(
            (
                info.row_id,
                info.contribution_id,
                info.contributor,
                info.cluster_id,
                info.len
            ),
            (
                d.row_id,
                d.contribution_id,
                d.contributor,
                d.cluster_id,
                d.tokens.len() as u64
            )
        );
        assert_eq!(index.doc_tokens(i as u64), d.tokens);
        if !d.tokens.is_empty() {
            assert_eq!(index.doc_at(info.start), i as u64);
            assert_eq!(index.doc_at(info.start + info.len - 1), i as u64);
        }
    }
    assert_eq!(
        index.corpus_tokens(),
        docs.iter().map(|d| d.tokens.len() as u64).sum::<u64>()
    );
}
