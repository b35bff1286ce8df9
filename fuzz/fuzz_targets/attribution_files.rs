//! What attribution reads from others: canonical attribution records, gradient stores and the
//! files of a span index. Decoding must never panic, and what decodes must re-encode to the
//! same bytes; an index directory whose files are arbitrary bytes must be refused or answer
//! queries without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openledger_attribution::{AttributionRecord, Index};
use openledger_llm::influence::GradientStore;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = AttributionRecord::decode(data) {
        assert_eq!(record.encode(), data);
    }
    if let Ok(store) = GradientStore::decode(data) {
        assert_eq!(store.encode(), data);
    }
    // A span index whose token file is the input, with a manifest that claims it.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cut = (split as usize).min(rest.len());
    let (manifest, tokens) = rest.split_at(cut);
    std::fs::write(dir.path().join("manifest.json"), manifest).unwrap();
    std::fs::write(dir.path().join("tokens.bin"), tokens).unwrap();
    if let Ok(index) = Index::open(dir.path()) {
        let _ = index.count(&[1, 2]);
        let _ = index.maximal_spans(&[1, 2, 3, 4], 1, 1.0);
    }
});
