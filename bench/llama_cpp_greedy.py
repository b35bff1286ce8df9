#!/usr/bin/env python3
"""Records llama.cpp's greedy continuations (llama-cpp-python) of a set of prompts on a GGUF,
for `crates/llm/tests/smollm.rs` to compare against token for token.

Usage: python bench/llama_cpp_greedy.py MODEL.gguf OUT.json [STEPS]
Greedy = argmax of the last logits, end tokens not special-cased, 2 threads.
"""

import json
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):",
    "<|im_start|>user\nName three primary colors.<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox",
    "<|im_start|>user\nTranslate 'good morning' into Spanish.<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village by the sea,",
    "<|im_start|>user\nWhat is 7 times 8?<|im_end|>\n<|im_start|>assistant\n",
    "import numpy as np\n\n",
]


def main():
    model, out = sys.argv[1:3]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    llm = Llama(model_path=model, n_ctx=512, n_threads=2, n_threads_batch=2, logits_all=False, verbose=False)
    cases = []
    for prompt in PROMPTS:
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        tokens = []
        for _ in range(steps):
            ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
            logits = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))
            nxt = int(np.argmax(logits))
            tokens.append(nxt)
            llm.eval([nxt])
        cases.append({"prompt": prompt, "tokens": tokens})
    with open(out, "w", encoding="utf-8") as f:
        f.write('{"llama_cpp": %s, "cases": [\n' % json.dumps(llama_cpp.__version__))
        f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in cases))
        f.write("\n]}\n")


if __name__ == "__main__":
    main()
