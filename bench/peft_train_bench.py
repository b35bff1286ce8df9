#!/usr/bin/env python3
"""Anchor for `openledger bench-train`: LoRA training with PyTorch + PEFT on the same model.

Usage: python bench/peft_train_bench.py '<json request>'
The request (written by the Rust side) holds: model_dir (a Hugging Face directory exported by
openledger), seq_len, batch, steps, rank, targets (PEFT module names), threads, text. One
warm-up step, then `steps` timed steps of forward + backward + AdamW on LoRA adapters of the
target layers, `batch` sequences per step. Prints one JSON line: tokens_per_s, peak_rss_mib,
torch, peft.
"""

import json
import sys
import time

import peft
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def peak_rss_mib():
    # VmHWM, not getrusage: ru_maxrss survives exec and would report the parent's peak.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    req = json.loads(sys.argv[1])
    torch.set_num_threads(req["threads"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(req["model_dir"], torch_dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(req["model_dir"])
    config = peft.LoraConfig(
        r=req["rank"],
        lora_alpha=2 * req["rank"],
        lora_dropout=0.0,
        target_modules=req["targets"],
        task_type="CAUSAL_LM",
    )
    model = peft.get_peft_model(model, config)
    model.train()
    ids = []
    while len(ids) < req["seq_len"]:
        ids += tokenizer(req["text"])["input_ids"]
    batch = torch.tensor([ids[: req["seq_len"]]] * req["batch"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    start = time.perf_counter()
    for _ in range(req["steps"]):
        step()
    seconds = time.perf_counter() - start
    print(json.dumps({
        "tokens_per_s": req["seq_len"] * req["batch"] * req["steps"] / seconds,
        "peak_rss_mib": peak_rss_mib(),
        "torch": torch.__version__,
        "peft": peft.__version__,
    }))


if __name__ == "__main__":
    main()
