#!/usr/bin/env python3
"""Records how llama.cpp (llama-cpp-python) tokenizes a corpus of hard strings with a GGUF's
own tokenizer, for `crates/llm/tests/smollm.rs` to compare against token for token.

Usage: python bench/llama_cpp_tokenize.py MODEL.gguf CORPUS.json OUT.json
CORPUS.json is a JSON list of strings; OUT.json gets {"llama_cpp": version, "cases": [{"text",
"ids"}]} with ids as llama.cpp gives them: no BOS, special tokens parsed.
"""

import json
import sys

import llama_cpp
from llama_cpp import Llama


def main():
    model, corpus, out = sys.argv[1:4]
    llm = Llama(model_path=model, vocab_only=True, verbose=False)
    texts = json.load(open(corpus, encoding="utf-8"))
    cases = [
        {"text": t, "ids": llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)}
        for t in texts
    ]
    with open(out, "w", encoding="utf-8") as f:
        f.write('{"llama_cpp": %s, "cases": [\n' % json.dumps(llama_cpp.__version__))
        f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in cases))
        f.write("\n]}\n")


if __name__ == "__main__":
    main()
