//! Span-index benchmark: ours against infini-gram on the same byte-level corpus.
//!
//! ```text
//! RUSTFLAGS="-C target-cpu=native" cargo run --release -p openledger-attribution \
//!     --bin attribution-bench -- [--mb 100] [--source ~/.cargo/registry/src] [--work /tmp/attr-bench]
//!     [--queries 2000] [--responses 20] [--python ~/.cache/openledger/venv-infinigram/bin/python]
//!     [--threads N (libsais, default 1; 0 = OpenMP default)] [--no-anchor] [--keep]
//! ```
//!
//! Documents are the UTF-8 files (≤ 1 MiB) under `--source`, in sorted path order, until
//! `--mb` megabytes. They are written as JSONL (`{"text": ...}`) for infini-gram and fed to
//! our build as byte-mode documents. Queries are n-grams of 4–32 bytes drawn from the
//! corpus; responses are 500 bytes spliced from five random 100-byte corpus pieces. Both
//! engines answer the same queries (`bench/infinigram_bench.py` drives infini-gram), counts
//! are cross-checked, and a table with ratios is printed. Work files are deleted at the end
//! unless `--keep`.

use std::error::Error;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use openledger_attribution::{
    BuildConfig, Document, Index, SpanParams, Vocab, attribute, build_index,
};

type Res<T> = Result<T, Box<dyn Error>>;

struct Args {
    source: PathBuf,
    mb: u64,
    work: PathBuf,
    queries: usize,
    responses: usize,
    python: PathBuf,
    anchor: bool,
    keep: bool,
    threads: u16,
}

fn parse_args() -> Res<Args> {
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    let mut args = Args {
        source: home.join(".cargo/registry/src"),
        mb: 100,
        work: PathBuf::from("/tmp/attr-bench"),
        queries: 2000,
        responses: 20,
        python: home.join(".cache/openledger/venv-infinigram/bin/python"),
        anchor: true,
        keep: false,
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--source" => args.source = value()?.into(),
            "--mb" => args.mb = value()?.parse()?,
            "--work" => args.work = value()?.into(),
            "--queries" => args.queries = value()?.parse()?,
            "--responses" => args.responses = value()?.parse()?,
            "--python" => args.python = value()?.into(),
            "--no-anchor" => args.anchor = false,
            "--keep" => args.keep = true,
            "--threads" => args.threads = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

/// SplitMix64: a seeded generator, so every run draws the same queries.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, budget: &mut i64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if *budget <= 0 {
            return;
        }
        let Ok(ft) = e.file_type() else { continue };
        let path = e.path();
        if ft.is_dir() {
            collect_files(&path, out, budget);
        } else if ft.is_file() {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            if len == 0 || len > 1 << 20 {
                continue;
            }
            match fs::read(&path) {
                Ok(bytes) if std::str::from_utf8(&bytes).is_ok() => {
                    *budget -= bytes.len() as i64;
                    out.push(path);
                }
                _ => {}
            }
        }
    }
}

fn vm_hwm_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Time `f` once per item (after one untimed pass) and return sorted latencies in µs.
fn latencies<T>(items: &[T], mut f: impl FnMut(&T)) -> Vec<f64> {
    items.iter().for_each(&mut f);
    let mut out: Vec<f64> = items
        .iter()
        .map(|q| {
            let t = Instant::now();
            f(q);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// A random corpus n-gram of up to `len` tokens that does not cross a document end.
fn draw(index: &Index, rng: &mut Rng, len: usize) -> Vec<u32> {
    let sep = index.vocab().separator();
    loop {
        let p = rng.below(index.num_tokens());
        let q: Vec<u32> = (p..(p + len as u64).min(index.num_tokens()))
            .map(|i| index.token(i))
            .take_while(|&t| t != sep)
            .collect();
        if q.len() == len {
            return q;
        }
    }
}

fn main() -> Res<()> {
    let args = parse_args()?;
    fs::create_dir_all(&args.work)?;
    let data_dir = args.work.join("data");
    let ours_dir = args.work.join("ours");
    let theirs_dir = args.work.join("infinigram");
    fs::create_dir_all(&data_dir)?;

    // ---- corpus ------------------------------------------------------------------------
    let mut files = Vec::new();
    let mut budget = (args.mb * 1_000_000) as i64;
    collect_files(&args.source, &mut files, &mut budget);
    let mut jsonl = BufWriter::new(fs::File::create(data_dir.join("corpus.jsonl"))?);
    let mut corpus_bytes = 0u64;
    for path in &files {
        let text = fs::read_to_string(path)?;
        corpus_bytes += text.len() as u64;
        serde_json::to_writer(&mut jsonl, &serde_json::json!({ "text": text }))?;
        jsonl.write_all(b"\n")?;
    }
    jsonl.flush()?;
    drop(jsonl);
    eprintln!(
        "corpus: {} documents, {:.1} MB",
        files.len(),
        corpus_bytes as f64 / 1e6
    );

    // ---- our build -------------------------------------------------------------------------
    let mut config = BuildConfig::new(Vocab::Bytes, vec![[0; 32]]);
    config.progress = true;
    config.threads = args.threads;
    let start = Instant::now();
    let docs = files.iter().enumerate().map(|(i, path)| {
        let bytes = fs::read(path).expect("corpus file still readable");
        let contribution = i as u64 / 8;
        Document::from_bytes(
            i as u64,
            contribution,
            [(contribution % 251) as u8; 20],
            i as u64,
            &bytes,
        )
    });
    let report = build_index(&ours_dir, &config, docs)?;
    let build_s = start.elapsed().as_secs_f64();
    let peak_mib = vm_hwm_kib() as f64 / 1024.0;
    let index = Index::open(&ours_dir)?;
    let bytes_per_token = index.size_bytes() as f64 / index.corpus_tokens() as f64;
    let build_parts = format!(
        "corpus pass {:.1} s (read files, write tokens, doc table, unigrams), libsais sort {:.1} s, \
         SA pack+write {:.1} s",
        report.corpus_time.as_secs_f64(),
        report.sort_time.as_secs_f64(),
        report.write_time.as_secs_f64()
    );
    eprintln!(
        "ours: built in {build_s:.1} s ({build_parts}), peak RSS {peak_mib:.0} MiB, {bytes_per_token:.2} bytes/token"
    );

    // ---- workload ----------------------------------------------------------------------
    let mut rng = Rng(0x0b5e_55ed);
    let lens = [4usize, 8, 16, 32];
    let queries: Vec<Vec<u32>> = (0..args.queries)
        .map(|i| draw(&index, &mut rng, lens[i % lens.len()]))
        .collect();
    let responses: Vec<Vec<u32>> = (0..args.responses)
        .map(|_| (0..5).flat_map(|_| draw(&index, &mut rng, 100)).collect())
        .collect();
    fs::write(
        args.work.join("queries.json"),
        serde_json::to_vec(&queries)?,
    )?;
    fs::write(
        args.work.join("responses.json"),
        serde_json::to_vec(&responses)?,
    )?;

    let counts: Vec<u64> = queries.iter().map(|q| index.count(q)).collect();
    let count_us = latencies(&queries, |q| {
        std::hint::black_box(index.count(q));
    });
    let occ_us = latencies(&queries, |q| {
        std::hint::black_box(index.occurrences(q, 10));
    });
    let longest_us = latencies(&responses, |r| {
        std::hint::black_box(index.longest_matches(r));
    });
    let params = SpanParams {
        min_len: 32,
        max_unigram_prob: 1.0,
        top_k: 16,
        max_occurrences: 10_000,
    };
    let attribute_us = latencies(&responses, |r| {
        std::hint::black_box(attribute(&index, r, &params).expect("valid params"));
    });
    let spans_per_response = responses
        .iter()
        .map(|r| index.maximal_spans(r, 1, 1.0).len())
        .sum::<usize>() as f64
        / responses.len() as f64;
    let verify_start = Instant::now();
    index.verify()?;
    let verify_s = verify_start.elapsed().as_secs_f64();

    // ---- the anchor ------------------------------------------------------------------------
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/infinigram_bench.py");
    let mut anchor: Option<serde_json::Value> = None;
    let mut anchor_note = String::new();
    if !args.anchor {
        anchor_note = "skipped (--no-anchor)".into();
    } else if !args.python.exists() {
        anchor_note = format!("not run: {} does not exist", args.python.display());
    } else {
        let out = args.work.join("infinigram.json");
        let status = Command::new(&args.python)
            .arg(&script)
            .args(["--data-dir", &data_dir.to_string_lossy()])
            .args(["--index-dir", &theirs_dir.to_string_lossy()])
            .args([
                "--queries",
                &args.work.join("queries.json").to_string_lossy(),
            ])
            .args([
                "--responses",
                &args.work.join("responses.json").to_string_lossy(),
            ])
            .args(["--out", &out.to_string_lossy()])
            .status()?;
        if status.success() {
            anchor = Some(serde_json::from_slice(&fs::read(&out)?)?);
        } else {
            anchor_note = format!("infinigram_bench.py failed ({status})");
        }
    }

    // ---- report ------------------------------------------------------------------------
    let f = |key: &str| {
        anchor
            .as_ref()
            .and_then(|a| a.get(key))
            .and_then(|v| v.as_f64())
    };
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!();
    println!(
        "corpus: {} documents, {:.1} MB ({} tokens incl. separators); {} queries of 4–32 bytes; {} responses of 500 bytes; CPU: {cpu}",
        files.len(),
        corpus_bytes as f64 / 1e6,
        index.num_tokens(),
        queries.len(),
        responses.len()
    );
    println!();
    println!("| metric | ours | infini-gram 2.6.0 | infini-gram / ours |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, ours: f64, theirs: Option<f64>, digits: usize| {
        let t = theirs.map_or("—".into(), |t| format!("{t:.digits$}"));
        let r = theirs.map_or("—".into(), |t| format!("{:.2}×", t / ours));
        println!("| {name} | {ours:.digits$} | {t} | {r} |");
    };
    row("index build (s)", build_s, f("build_s"), 1);
    row(
        "peak RSS during build (MiB)",
        peak_mib,
        f("peak_rss_mib"),
        0,
    );
    row(
        "index bytes per token",
        bytes_per_token,
        f("bytes_per_token"),
        2,
    );
    row(
        "count p50 (µs)",
        percentile(&count_us, 0.5),
        f("count_p50_us"),
        2,
    );
    row(
        "count p99 (µs)",
        percentile(&count_us, 0.99),
        f("count_p99_us"),
        2,
    );
    row(
        "occurrences ≤10 p50 (µs)",
        percentile(&occ_us, 0.5),
        f("occ_p50_us"),
        2,
    );
    row(
        "occurrences ≤10 p99 (µs)",
        percentile(&occ_us, 0.99),
        f("occ_p99_us"),
        2,
    );
    row(
        "longest match, every position of a 500-token response, p50 (ms)",
        percentile(&longest_us, 0.5) / 1e3,
        f("creativity_p50_us").map(|v| v / 1e3),
        2,
    );
    row(
        "maximal spans + shares of a 500-token response, p50 (ms)",
        percentile(&attribute_us, 0.5) / 1e3,
        f("attribute_p50_us").map(|v| v / 1e3),
        2,
    );
    println!();
    let threads = match args.threads {
        0 => "OpenMP default".to_string(),
        n => n.to_string(),
    };
    println!("ours: build = {build_parts}; libsais threads: {threads}");
    println!(
        "ours: full BLAKE3 verification of the index {verify_s:.2} s; {spans_per_response:.1} maximal spans per response"
    );
    if let Some(a) = &anchor {
        let theirs: Vec<u64> = a["counts"]
            .as_array()
            .map(|v| v.iter().filter_map(|c| c.as_u64()).collect())
            .unwrap_or_default();
        let agree = theirs == counts;
        println!(
            "counts agree with infini-gram on {}/{} queries{}",
            counts.iter().zip(&theirs).filter(|(a, b)| a == b).count(),
            counts.len(),
            if agree { "" } else { " (MISMATCH)" }
        );
        let ends: Vec<Vec<u64>> =
            serde_json::from_value(a["longest_ends"].clone()).unwrap_or_default();
        let ours_ends: Vec<Vec<u64>> = responses
            .iter()
            .map(|r| {
                index
                    .longest_matches(r)
                    .iter()
                    .map(|m| m.end as u64)
                    .collect()
            })
            .collect();
        if !ends.is_empty() {
            let same = ends.iter().zip(&ours_ends).filter(|(a, b)| a == b).count();
            println!(
                "longest match at every position agrees with infini-gram's creativity on {same}/{} responses",
                ours_ends.len()
            );
        }
        let spans: Vec<Vec<(u64, u64, u64)>> =
            serde_json::from_value(a["spans"].clone()).unwrap_or_default();
        let ours_spans: Vec<Vec<(u64, u64, u64)>> = responses
            .iter()
            .map(|r| {
                index
                    .maximal_spans(r, 32, 1.0)
                    .iter()
                    .map(|s| (s.start as u64, s.end as u64, s.count()))
                    .collect()
            })
            .collect();
        if !spans.is_empty() {
            let same = spans
                .iter()
                .zip(&ours_spans)
                .filter(|(a, b)| a == b)
                .count();
            println!(
                "maximal spans (min_len 32) agree with infini-gram's attribute on {same}/{} responses",
                ours_spans.len()
            );
        }
        if let Some(n) = a.get("notes").and_then(|n| n.as_str()) {
            println!("infini-gram: {n}");
        }
    } else {
        println!("infini-gram: {anchor_note}");
    }

    drop(index);
    if !args.keep {
        fs::remove_dir_all(&args.work)?;
    }
    Ok(())
}
