"""infini-gram side of `attribution-bench` (crates/attribution/src/bin/attribution-bench.rs).

Builds a byte-level infini-gram index (no tokenizer, u8 tokens) over the JSONL corpus the
Rust bench wrote, then answers the same queries the Rust side timed and writes the figures
as JSON. Latencies are timed around the pybind11 engine object (`engine.engine`), which
skips the Python wrapper's argument checks but still pays the Python→C++ call (~1 µs).

Run by the Rust bench; alone:
  python bench/infinigram_bench.py --data-dir D --index-dir I --queries Q.json \
      --responses R.json --out out.json
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[round((len(sorted_values) - 1) * p)]


def latencies(items, f):
    for item in items:  # one untimed pass, as on the Rust side
        f(item)
    out = []
    for item in items:
        t = time.perf_counter_ns()
        f(item)
        out.append((time.perf_counter_ns() - t) / 1e3)
    out.sort()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--index-dir", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--responses", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--mem", type=int, default=8, help="GiB infini-gram may use")
    args = ap.parse_args()

    index_dir = os.path.abspath(args.index_dir)
    os.makedirs(index_dir, exist_ok=True)
    cmd = [
        sys.executable, "-m", "infini_gram.indexing",
        "--data_dir", os.path.abspath(args.data_dir),
        "--save_dir", index_dir,
        "--token_dtype", "u8",
        "--cpus", str(args.cpus),
        "--mem", str(args.mem),
        "--ulimit", str(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
    ]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    build_s = time.perf_counter() - t
    # Largest resident set of any process the indexer ran (ru_maxrss of waited-for children, KiB).
    peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    index_bytes = sum(
        os.path.getsize(os.path.join(index_dir, f))
        for f in os.listdir(index_dir)
        if os.path.isfile(os.path.join(index_dir, f))
    )
    tokenized = os.path.getsize(os.path.join(index_dir, "tokenized.0"))
    ndocs = os.path.getsize(os.path.join(index_dir, "offset.0")) // 8
    corpus_tokens = tokenized - ndocs  # one 0xff separator per document

    from infini_gram import cpp_engine

    # The engine as InfiniGramEngine(token_dtype="u8") builds it, minus the wrapper's
    # assertion eos < vocab_size: vocab_size is held in the token type (u8), so 255 is the
    # largest it accepts, and the separator 0xff is the document end. Arguments: index dirs,
    # eos, vocab size, version, load_to_ram, ds/sa/od prefetch depths, bow ids, attribution
    # block size, precompute unigram logprobs, previous shards.
    raw = cpp_engine.Engine_U8([index_dir], 255, 255, 4, False, 1, 3, 3, set(), 512, False, {})

    with open(args.queries) as f:
        queries = json.load(f)
    with open(args.responses) as f:
        responses = json.load(f)

    counts = [raw.count(input_ids=q).count for q in queries]
    count_us = latencies(queries, lambda q: raw.count(input_ids=q))

    def occurrences(q):
        found = raw.find(input_ids=q)
        docs = []
        for s, (start, end) in enumerate(found.segment_by_shard):
            for rank in range(start, min(end, start + 10 - len(docs))):
                docs.append(raw.get_doc_by_rank_2(s=s, rank=rank, needle_len=len(q), max_ctx_len=0))
        return docs

    occ_us = latencies(queries, occurrences)
    notes = []
    try:
        creativity_us = latencies(responses, lambda r: raw.creativity(input_ids=r))
    except Exception as e:  # noqa: BLE001 - report, do not fail the whole bench
        creativity_us = []
        notes.append(f"creativity failed: {e}")
    try:
        attribute_us = latencies(
            responses,
            lambda r: raw.attribute(input_ids=r, delim_ids=[], min_len=32, max_cnt=10000, enforce_bow=False),
        )
    except Exception as e:  # noqa: BLE001
        attribute_us = []
        notes.append(f"attribute failed: {e}")
    longest_ends = [list(raw.creativity(input_ids=r).rs) for r in responses] if creativity_us else []
    spans = [
        [[sp.l, sp.r, sp.count] for sp in raw.attribute(input_ids=r, delim_ids=[], min_len=32, max_cnt=10000, enforce_bow=False).spans]
        for r in responses
    ] if attribute_us else []
    notes.append(
        "latencies timed through pybind11 (engine.engine), Python call overhead included; "
        "its engine starts a thread per shard for every query (one clone3 per count under strace), "
        "so on a loaded machine its latencies are mostly that thread's scheduling delay"
    )

    result = {
        "build_s": build_s,
        "peak_rss_mib": peak_rss_mib,
        "index_bytes": index_bytes,
        "bytes_per_token": index_bytes / max(corpus_tokens, 1),
        "count_p50_us": percentile(count_us, 0.5),
        "count_p99_us": percentile(count_us, 0.99),
        "occ_p50_us": percentile(occ_us, 0.5),
        "occ_p99_us": percentile(occ_us, 0.99),
        "creativity_p50_us": percentile(creativity_us, 0.5) if creativity_us else None,
        "attribute_p50_us": percentile(attribute_us, 0.5) if attribute_us else None,
        "counts": counts,
        "longest_ends": longest_ends,
        "spans": spans,
        "notes": "; ".join(notes),
    }
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
