//! Any bytes as a contributed file of any format: the readers and the row schema checks must
//! report bad records, never panic or buffer past the row limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openledger_datanet::pipeline::{DedupIndex, Pipeline, Policy};
use openledger_datanet::row::Schema;
use openledger_dataservice::ingest::{self, Content, Format};

const FORMATS: [(Format, &str); 5] = [
    (Format::Jsonl, "f.jsonl"),
    (Format::Csv, "f.csv"),
    (Format::Parquet, "f.parquet"),
    (Format::Text, "f.txt"),
    (Format::Markdown, "f.md"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (format, name) = FORMATS[selector as usize % FORMATS.len()];
    let schema = Schema::from_code(selector / 5 % 3).expect("0..3 are schemas");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, body).expect("write");
    let Ok(records) = ingest::open(&path, format, name, 4096) else {
        return;
    };
    let pipeline = Pipeline::new(schema, Policy::default());
    let index = DedupIndex::default();
    for record in records.take(1000) {
        match record.content {
            Content::Json(value) => {
                let _ = pipeline.check_json(value, &[&index]);
            }
            Content::Text(text) => {
                assert!(text.len() <= 4096, "a document over the row limit was read");
                let _ = pipeline.check_text(&text, &[&index]);
            }
            Content::Unreadable(reason) => assert!(!reason.is_empty()),
        }
    }
});
