#!/usr/bin/env python3
"""Anchor benchmark: datatrove's MinHash near-duplicate dedup on a JSONL corpus.

Usage:
    python bench/datatrove_minhash.py CORPUS.jsonl WORKDIR [--split-tokenizer]

CORPUS.jsonl has one {"text": "..."} object per line (an "id" is optional). WORKDIR is scratch space
(signatures, duplicate pairs, removal lists, logs and the deduplicated output); whatever an
earlier run left under WORKDIR/datatrove is deleted first.

Runs datatrove's four MinHash stages in order, all in this one process, one task at a time
(LocalPipelineExecutor with workers=1, so a single core):
    1. signatures  - one task: shingle, MinHash, write one sorted signature file per bucket
    2. buckets     - one task per bucket (16), run one after another by the single worker
    3. clustering  - one task: union-find over the duplicate pairs, list docs to remove
    4. filtering   - one task: re-read the corpus, drop listed docs, write the rest as JSONL

Config: word 5-gram shingles, 16 buckets x 8 hashes = 128 hashes, 64-bit xxhash (datatrove's
defaults apart from num_buckets, which defaults to 14). Before shingling datatrove lowercases,
replaces digit runs with "0", turns punctuation into spaces, collapses whitespace and strips
diacritics, then splits words with spaCy's blank English tokenizer (no model download needed).
--split-tokenizer swaps spaCy for plain str.split() to show how much of the time is spaCy's.

datatrove's log lines and progress bars go to stderr; the last line on stdout is one JSON
object: {"bytes", "docs", "seconds", "mb_per_s", "removed", "datatrove"}, where seconds is the
wall time of all four stages together and mb_per_s is bytes / seconds / 1e6.
"""

import json
import os
import shutil
import sys
import time
from importlib.metadata import version

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.word_tokenizers import WordTokenizer

CONFIG = MinhashConfig(
    n_grams=5,  # word 5-gram shingles
    num_buckets=16,  # LSH bands
    hashes_per_bucket=8,  # rows per band: 16 x 8 = 128 hashes in all
    hash_config=HashConfig(precision=64, hash_fc="xxhash"),  # datatrove's default shingle hash
)


class SplitTokenizer(WordTokenizer):
    """Whitespace word splitting, the same as `str.split()`; only word_tokenize is used by MinHash."""

    def word_tokenize(self, text):
        return text.split()

    def sent_tokenize(self, text):
        return [text]

    def span_tokenize(self, text):
        return [(0, len(text))]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    flags = {a for a in sys.argv[1:] if a.startswith("--")}
    if len(args) != 2 or not flags <= {"--split-tokenizer"}:
        sys.exit(__doc__)
    corpus, workdir = os.path.abspath(args[0]), os.path.abspath(args[1])
    # "eng" is what datatrove picks by default (spaCy blank English); a WordTokenizer instance overrides it.
    language = SplitTokenizer() if "--split-tokenizer" in flags else "eng"

    # Everything datatrove writes lives under one folder that is wiped first: an executor skips
    # tasks whose completion marker already exists, so stale state would fake a fast run.
    base = os.path.join(workdir, "datatrove")
    shutil.rmtree(base, ignore_errors=True)
    sigs, dups, removals, logs = (os.path.join(base, d) for d in ("signatures", "buckets", "remove_ids", "logs"))

    def reader():
        # Read exactly the one corpus file: its folder, globbed to its name, not recursively.
        return JsonlReader(
            os.path.dirname(corpus), glob_pattern=os.path.basename(corpus), recursive=False, compression=None
        )

    def executor(name, pipeline, tasks=1):
        # workers=1 runs the tasks sequentially in this process (no process pool).
        return LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=1,
            logging_dir=os.path.join(logs, name),
            skip_completed=False,
        )

    stages = [
        ("signatures", executor("signatures", [reader(), MinhashDedupSignature(sigs, config=CONFIG, language=language)])),
        # The bucket stage needs exactly one task per bucket (or a multiple of num_buckets).
        ("buckets", executor("buckets", [MinhashDedupBuckets(sigs, dups, config=CONFIG)], tasks=CONFIG.num_buckets)),
        ("clustering", executor("clustering", [MinhashDedupCluster(dups, removals, config=CONFIG)])),
        (
            "filtering",
            executor(
                "filtering",
                [
                    reader(),
                    MinhashDedupFilter(removals),
                    JsonlWriter(os.path.join(base, "deduplicated"), compression=None),
                ],
            ),
        ),
    ]

    total = 0.0
    for name, stage in stages:
        start = time.perf_counter()
        stage.run()
        elapsed = time.perf_counter() - start
        total += elapsed
        print(f"[bench] {name}: {elapsed:.3f} s", file=sys.stderr)

    # Clustering writes one little-endian u32 per removed document into 000000.remove (rank 0).
    remove_file = os.path.join(removals, "000000.remove")
    removed = os.path.getsize(remove_file) // 4 if os.path.exists(remove_file) else 0
    size = os.path.getsize(corpus)
    with open(corpus, "rb") as f:
        docs = sum(1 for line in f if line.strip())

    result = {
        "bytes": size,
        "docs": docs,
        "seconds": round(total, 4),
        "mb_per_s": round(size / total / 1e6, 4),
        "removed": removed,
        "datatrove": version("datatrove"),
    }
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
