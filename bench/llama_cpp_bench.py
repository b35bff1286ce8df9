#!/usr/bin/env python3
"""Anchor for `openledger bench-model`: llama.cpp (through llama-cpp-python) on the same GGUF.

Usage: python bench/llama_cpp_bench.py '<json request>'
The request (written by the Rust side) holds: model (GGUF path), prompt (token ids), decode
(tokens to generate greedily), runs (best of), threads, text (a string to tokenize).
Prints one JSON line: prefill_tok_s, decode_tok_s, greedy (token ids), text_tokens (ids of
`text` as llama.cpp tokenizes it, no BOS, special tokens parsed), version.
"""

import json
import sys
import time

import numpy as np
import llama_cpp
from llama_cpp import Llama


def last_logits(llm):
    # With logits_all=False (the fast setting) `llm.scores` stays empty; read the context's
    # last logits directly.
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))


def main():
    req = json.loads(sys.argv[1])
    prompt = req["prompt"]
    llm = Llama(
        model_path=req["model"],
        n_ctx=max(512, len(prompt) + req["decode"] + 8),
        n_batch=max(512, len(prompt)),
        n_threads=req["threads"],
        n_threads_batch=req["threads"],
        logits_all=False,
        verbose=False,
    )
    best_prefill = best_decode = float("inf")
    greedy = []
    for _ in range(max(1, req["runs"])):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        best_prefill = min(best_prefill, time.perf_counter() - start)
        tokens = []
        start = time.perf_counter()
        for _ in range(req["decode"]):
            nxt = int(np.argmax(last_logits(llm)))
            tokens.append(nxt)
            llm.eval([nxt])
        best_decode = min(best_decode, time.perf_counter() - start)
        greedy = tokens
    text_tokens = llm.tokenize(req["text"].encode("utf-8"), add_bos=False, special=True)
    print(json.dumps({
        "prefill_tok_s": len(prompt) / best_prefill,
        "decode_tok_s": req["decode"] / best_decode,
        "greedy": greedy,
        "text_tokens": text_tokens,
        "version": llama_cpp.__version__,
    }))


if __name__ == "__main__":
    main()
