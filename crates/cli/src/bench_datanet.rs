//! `openledger bench-datanet`: the datanet pipeline's speed and near-duplicate quality.
//!
//! 1. **Ingest**: a synthetic JSONL corpus goes through the whole data service path (read,
//!    schema, normalise, exact dedup, MinHash near-dup, PII, quality, segment + blobs, seal) on
//!    one thread; the same file goes through datatrove's MinHash dedup (PyPI, one worker) when
//!    `--datatrove-python` is given. MB/s of each and the ratio are printed.
//! 2. **Scale**: a datanet of `--datanet-mb` accepted rows is indexed, then a contribution of
//!    `--contribution-mb` (a tenth of it planted near-duplicates of datanet rows) is checked
//!    against it.
//! 3. **Quality**: documents with planted near-duplicates (word edits, sentence moves,
//!    boilerplate headers and footers, combinations) and unrelated negatives sharing boilerplate;
//!    precision and recall at the default threshold, per kind of change.
//!
//! Nothing is asserted: timings on these machines are noisy, so the figures are printed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use openledger_datanet::merkle::row_hash;
use openledger_datanet::pipeline::{DedupIndex, Pipeline, Policy, RejectCode};
use openledger_datanet::row::{Row, Schema};
use openledger_dataservice::ledger::{
    ContributionInfo, DatanetInfo, Ledger, LedgerError, SnapshotInfo,
};
use openledger_dataservice::{DataService, ServiceConfig};
use openledger_primitives::{Address, B256};
use serde_json::json;

#[derive(Args, Debug)]
pub struct DatanetBenchArgs {
    /// MB of corpus for the ingest comparison.
    #[arg(long, default_value_t = 20)]
    pub ingest_mb: usize,
    /// MB of accepted rows for the near-dup check at scale (0 skips it).
    #[arg(long, default_value_t = 1024)]
    pub datanet_mb: usize,
    /// MB of the contribution checked against them.
    #[arg(long, default_value_t = 10)]
    pub contribution_mb: usize,
    /// Python of a virtualenv with datatrove (`bench/setup_datatrove.sh` prints it).
    #[arg(long)]
    pub datatrove_python: Option<PathBuf>,
    /// Original documents in the quality corpus (each gets several planted near-duplicates).
    #[arg(long, default_value_t = 1000)]
    pub quality_docs: usize,
}

/// A small deterministic PRNG (splitmix64): the corpus must be the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Synthetic prose: words from a Zipf-distributed vocabulary, sentences of 8–20 words.
struct Writer {
    vocabulary: Vec<String>,
    /// Cumulative Zipf weights for sampling.
    cumulative: Vec<f64>,
}

impl Writer {
    fn new(rng: &mut Rng) -> Self {
        const SYLLABLES: [&str; 24] = [
            "ka", "ro", "mi", "tel", "an", "sor", "ve", "lun", "dra", "po", "ni", "gar", "est",
            "ul", "bri", "om", "tas", "fe", "qui", "lo", "zen", "har", "is", "cot",
        ];
        let mut vocabulary = Vec::with_capacity(30_000);
        let mut seen = std::collections::HashSet::new();
        while vocabulary.len() < 30_000 {
            let n = 1 + rng.below(4);
            let word: String = (0..n)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect();
            if seen.insert(word.clone()) {
                vocabulary.push(word);
            }
        }
        let mut total = 0.0;
        let cumulative = (1..=vocabulary.len())
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Self {
            vocabulary,
            cumulative,
        }
    }

    fn word(&self, rng: &mut Rng) -> &str {
        let total = *self.cumulative.last().expect("non-empty");
        let x = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        let i = self.cumulative.partition_point(|&c| c < x);
        &self.vocabulary[i.min(self.vocabulary.len() - 1)]
    }

    fn sentence(&self, rng: &mut Rng) -> String {
        let n = 8 + rng.below(13);
        let mut words: Vec<String> = (0..n).map(|_| self.word(rng).to_string()).collect();
        let first = &mut words[0];
        *first = first[..1].to_uppercase() + &first[1..];
        words.join(" ") + "."
    }

    /// A document of 150–650 words.
    fn random_document(&self, rng: &mut Rng) -> Vec<String> {
        let words = 150 + rng.below(500);
        self.document(rng, words)
    }

    /// A document as a list of sentences, about `words` words long.
    fn document(&self, rng: &mut Rng, words: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut count = 0;
        while count < words {
            let s = self.sentence(rng);
            count += s.split(' ').count();
            out.push(s);
        }
        out
    }
}

/// The kinds of near-duplicate planted in the quality corpus.
const VARIANTS: [&str; 9] = [
    "1% words edited",
    "3% words edited",
    "5% words edited",
    "two sentences swapped",
    "a sentence moved to the end",
    "boilerplate footer added",
    "boilerplate header added",
    "3% edited + footer",
    "swap + 2% edited",
];

const FOOTER: &str = "This article was first published by the regional desk. All rights reserved. Reproduction without written permission is prohibited; contact the editors for licensing terms.";
const HEADER: &str = "Community bulletin, weekly edition. Posted by the newsroom team.";

fn plant(writer: &Writer, rng: &mut Rng, sentences: &[String], variant: usize) -> String {
    let mut s = sentences.to_vec();
    let edit = |s: &mut Vec<String>, rng: &mut Rng, rate: f64| {
        for sentence in s.iter_mut() {
            let words: Vec<String> = sentence
                .split(' ')
                .map(|w| {
                    if rng.chance(rate) {
                        writer.word(rng).to_string()
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            *sentence = words.join(" ");
        }
    };
    let swap = |s: &mut Vec<String>, rng: &mut Rng| {
        if s.len() > 2 {
            let i = rng.below(s.len() - 1);
            s.swap(i, i + 1);
        }
    };
    match variant {
        0 => edit(&mut s, rng, 0.01),
        1 => edit(&mut s, rng, 0.03),
        2 => edit(&mut s, rng, 0.05),
        3 => swap(&mut s, rng),
        4 => {
            let i = rng.below(s.len());
            let moved = s.remove(i);
            s.push(moved);
        }
        5 => s.push(FOOTER.to_string()),
        6 => s.insert(0, HEADER.to_string()),
        7 => {
            edit(&mut s, rng, 0.03);
            s.push(FOOTER.to_string());
        }
        _ => {
            swap(&mut s, rng);
            edit(&mut s, rng, 0.02);
        }
    }
    s.join(" ")
}

/// Peak resident memory of this process, from /proc (Linux only).
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A ledger with one open text datanet and nothing accepted: the ingest bench dedups each
/// upload against itself, as datatrove does.
struct BenchLedger;

impl Ledger for BenchLedger {
    fn datanet(&self, id: u64) -> Result<Option<DatanetInfo>, LedgerError> {
        Ok(Some(DatanetInfo {
            id,
            owner: Address::ZERO,
            name: "bench".into(),
            description_hash: B256::ZERO,
            license: "CC0-1.0".into(),
            schema: Schema::Text,
            permissioned: false,
            allowlist_only: false,
            review_quorum: 1,
            closed: false,
        }))
    }
    fn contribution(&self, _: u64) -> Result<Option<ContributionInfo>, LedgerError> {
        Ok(None)
    }
    fn contributions(&self, _: u64) -> Result<Vec<ContributionInfo>, LedgerError> {
        Ok(Vec::new())
    }
    fn snapshot(&self, _: u64) -> Result<Option<SnapshotInfo>, LedgerError> {
        Ok(None)
    }
    fn latest_snapshot(&self, _: u64) -> Result<Option<SnapshotInfo>, LedgerError> {
        Ok(None)
    }
    fn may_read(&self, _: u64, _: Address) -> Result<bool, LedgerError> {
        Ok(true)
    }
}

/// Writes a JSONL corpus of about `mb` MB: documents of 150–650 words, a tenth of them planted
/// near-duplicates of earlier ones. Returns the number of documents.
fn write_corpus(path: &Path, writer: &Writer, rng: &mut Rng, mb: usize) -> Result<usize> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0usize;
    let mut docs: Vec<Vec<String>> = Vec::new();
    let mut n = 0;
    while written < mb * 1_000_000 {
        let text = if !docs.is_empty() && rng.chance(0.1) {
            let original = &docs[rng.below(docs.len())];
            let variant = rng.below(VARIANTS.len());
            plant(writer, rng, original, variant)
        } else {
            let d = writer.random_document(rng);
            let text = d.join(" ");
            if docs.len() < 5_000 {
                docs.push(d);
            }
            text
        };
        let line = json!({ "text": text }).to_string();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        written += line.len() + 1;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

pub fn run(args: DatanetBenchArgs) -> Result<()> {
    let mut rng = Rng(0x5eed);
    let writer = Writer::new(&mut rng);
    let work = tempfile::tempdir()?;
    quality(&writer, &mut Rng(7), args.quality_docs);
    ingest(&args, &writer, &mut Rng(11), work.path())?;
    if args.datanet_mb > 0 {
        scale(&args, &writer, &mut Rng(13));
    }
    Ok(())
}

fn quality(writer: &Writer, rng: &mut Rng, docs: usize) {
    let pipeline = Pipeline::new(Schema::Text, Policy::default());
    let mut index = DedupIndex::default();
    let mut originals = Vec::new();
    for _ in 0..docs {
        let d = writer.random_document(rng);
        let accepted = pipeline
            .check_json(json!({ "text": d.join(" ") }), &[&index])
            .expect("distinct synthetic documents pass");
        index.insert(accepted.hash, &accepted.signature);
        originals.push((d, accepted.hash));
    }
    let mut found = vec![0usize; VARIANTS.len()];
    let mut planted = vec![0usize; VARIANTS.len()];
    let mut wrong_target = 0;
    for (i, (d, hash)) in originals.iter().enumerate() {
        let variant = i % VARIANTS.len();
        for v in [variant, (variant + 4) % VARIANTS.len()] {
            planted[v] += 1;
            let text = plant(writer, rng, d, v);
            match pipeline.check_json(json!({ "text": text }), &[&index]) {
                Err(r)
                    if matches!(
                        r.code,
                        RejectCode::NearDuplicate | RejectCode::ExactDuplicate
                    ) =>
                {
                    found[v] += 1;
                    if r.duplicate_of != Some(*hash) {
                        wrong_target += 1;
                    }
                }
                _ => {}
            }
        }
    }
    // Negatives: new documents, half of them wearing the same boilerplate the positives do.
    let mut false_positives = 0;
    let negatives = docs * 2;
    for i in 0..negatives {
        let mut d = writer.random_document(rng);
        match i % 4 {
            0 => d.push(FOOTER.to_string()),
            1 => d.insert(0, HEADER.to_string()),
            _ => {}
        }
        if let Err(r) = pipeline.check_json(json!({ "text": d.join(" ") }), &[&index])
            && matches!(
                r.code,
                RejectCode::NearDuplicate | RejectCode::ExactDuplicate
            )
        {
            false_positives += 1;
        }
    }
    let tp: usize = found.iter().sum::<usize>() - wrong_target;
    let total: usize = planted.iter().sum();
    let precision = tp as f64 / (tp + false_positives + wrong_target).max(1) as f64;
    let recall = tp as f64 / total as f64;
    println!(
        "## Near-duplicate quality (threshold {:.2}, word 5-shingles, 128 permutations, LSH 32×4)\n",
        Policy::default().near_dup_threshold
    );
    println!(
        "{docs} originals, {total} planted near-duplicates, {negatives} unrelated negatives (half with shared boilerplate)\n"
    );
    println!("| change | planted | caught | recall |\n|---|---|---|---|");
    for (v, name) in VARIANTS.iter().enumerate() {
        println!(
            "| {name} | {} | {} | {:.3} |",
            planted[v],
            found[v],
            found[v] as f64 / planted[v].max(1) as f64
        );
    }
    println!(
        "\nprecision {precision:.3}, recall {recall:.3} ({false_positives} false positives, {wrong_target} matched to the wrong original)\n"
    );
}

fn ingest(args: &DatanetBenchArgs, writer: &Writer, rng: &mut Rng, work: &Path) -> Result<()> {
    let corpus = work.join("corpus.jsonl");
    let docs = write_corpus(&corpus, writer, rng, args.ingest_mb)?;
    let bytes = std::fs::metadata(&corpus)?.len();
    println!(
        "## Ingest throughput, {:.1} MB, {docs} documents (a tenth planted near-duplicates), one thread\n",
        bytes as f64 / 1e6
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let service_dir = work.join("service");
    let (seconds, accepted, rejected) = runtime.block_on(async {
        let service =
            DataService::open(&ServiceConfig::local(&service_dir), Arc::new(BenchLedger))?;
        let started = Instant::now();
        let upload = service.begin_upload(1)?;
        let report = service.ingest_file(&upload, &corpus, "corpus.jsonl")?;
        service.seal(&upload)?;
        anyhow::Ok((
            started.elapsed().as_secs_f64(),
            report.accepted,
            report.records - report.accepted,
        ))
    })?;
    let ours = bytes as f64 / 1e6 / seconds;
    println!("| system | seconds | MB/s | removed | ratio |\n|---|---|---|---|---|");
    println!(
        "| openledger (whole pipeline + storage) | {seconds:.2} | {ours:.2} | {rejected} ({accepted} kept) | 1.00 |"
    );

    let Some(python) = &args.datatrove_python else {
        println!("\n(datatrove skipped: pass --datatrove-python, see bench/setup_datatrove.sh)\n");
        return Ok(());
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/datatrove_minhash.py");
    for (label, extra) in [
        ("datatrove 0.10 as shipped (spaCy words)", None),
        ("datatrove, str.split words", Some("--split-tokenizer")),
    ] {
        let mut cmd = Command::new(python);
        cmd.arg(&script).arg(&corpus).arg(work.join("datatrove"));
        if let Some(flag) = extra {
            cmd.arg(flag);
        }
        let output = cmd
            .env("OMP_NUM_THREADS", "1")
            .output()
            .with_context(|| format!("cannot run {}", python.display()))?;
        if !output.status.success() {
            bail!(
                "datatrove failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        let result: serde_json::Value = serde_json::from_str(last)
            .with_context(|| format!("datatrove printed no JSON summary: {last}"))?;
        let theirs = result["mb_per_s"].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {label} | {:.2} | {theirs:.2} | {} | {:.1}× |",
            result["seconds"].as_f64().unwrap_or(f64::NAN),
            result["removed"],
            ours / theirs
        );
    }
    println!();
    Ok(())
}

fn scale(args: &DatanetBenchArgs, writer: &Writer, rng: &mut Rng) {
    let pipeline = Pipeline::new(Schema::Text, Policy::default());
    let mut index = DedupIndex::default();
    let mut kept: Vec<Vec<String>> = Vec::new();
    let started = Instant::now();
    let mut bytes = 0usize;
    let mut rows = 0usize;
    let mut hashes: HashMap<B256, ()> = HashMap::new();
    while bytes < args.datanet_mb * 1_000_000 {
        let d = writer.random_document(rng);
        let row = Row::text(&d.join(" ")).expect("non-empty");
        let canonical = row.canonical();
        let hash = row_hash(&canonical);
        index.insert(hash, &pipeline.signature(&row));
        hashes.insert(hash, ());
        bytes += canonical.len();
        rows += 1;
        if kept.len() < 20_000 {
            kept.push(d);
        }
    }
    let build = started.elapsed().as_secs_f64();
    println!("## Near-dup check at scale\n");
    println!(
        "datanet: {:.0} MB, {rows} rows indexed in {build:.1} s ({:.1} MB/s, generation included); peak RSS {:.0} MiB",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / build,
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    let mut contribution = Vec::new();
    let mut size = 0;
    let mut planted = 0;
    while size < args.contribution_mb * 1_000_000 {
        let text = if rng.chance(0.1) {
            planted += 1;
            let (original, variant) = (rng.below(kept.len()), rng.below(VARIANTS.len()));
            plant(writer, rng, &kept[original], variant)
        } else {
            writer.random_document(rng).join(" ")
        };
        size += text.len();
        contribution.push(text);
    }
    let started = Instant::now();
    let mut caught = 0;
    for text in &contribution {
        if let Err(r) = pipeline.check_json(json!({ "text": text }), &[&index])
            && matches!(
                r.code,
                RejectCode::NearDuplicate | RejectCode::ExactDuplicate
            )
        {
            caught += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "contribution: {:.1} MB, {} rows ({planted} planted near-duplicates) checked in {seconds:.2} s = {:.2} MB/s; {caught} flagged\n",
        size as f64 / 1e6,
        contribution.len(),
        size as f64 / 1e6 / seconds
    );
}
