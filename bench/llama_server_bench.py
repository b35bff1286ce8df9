#!/usr/bin/env python3
"""Anchor for `openledger bench-serve`: llama.cpp's llama-server serving many LoRA adapters.

Usage: python bench/llama_server_bench.py REQUEST.json

The request (written by the Rust side) holds: server (the llama-server binary), model (GGUF),
loras (GGUF adapter files; adapter k is loras[k]), configs (adapter counts, 0 = base model),
requests (per configuration), streams (requests in flight),
max_tokens, prompts (lists of token ids), threads, log (where the server's output goes).

llama-server starts once with every adapter loaded and none applied (`--lora-init-without-apply`;
one `--lora` with comma-separated files, since a repeated flag keeps only the last). For each
configuration, requests run closed loop with `streams` in flight: request j uses prompt
j % len(prompts) and adapter j % N (with more adapters than requests, adapter j·N/requests), selected by the request's `lora` field, greedy
(temperature 0), `n_predict` = max_tokens, no prompt cache (the OpenLoRA engine has none),
streamed so the time to first token can be seen. Prints one JSON line: a list of
{adapters, requests, tokens, tok_s, ttft_p50_ms, ttft_p99_ms}. Standard library only.
"""

import http.client
import json
import math
import socket
import subprocess
import sys
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def wait_healthy(port, proc, log, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama-server exited with {proc.returncode}; see {log}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"llama-server not healthy after {timeout}s; see {log}")


def one(conn, body):
    """Sends one streamed /completion request; returns (ttft seconds, tokens generated)."""
    started = time.perf_counter()
    conn.request("POST", "/completion", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:500]!r}")
    ttft = None
    chunks = 0
    predicted = None
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        if ttft is None:
            ttft = time.perf_counter() - started
        event = json.loads(line[5:])
        if "error" in event:
            raise RuntimeError(f"llama-server: {event['error']}")
        chunks += 1
        if event.get("stop"):
            predicted = event.get("tokens_predicted") or event.get("timings", {}).get("predicted_n")
            break
    resp.read()
    return ttft if ttft is not None else time.perf_counter() - started, (
        predicted if predicted is not None else chunks)


def run_config(port, req, adapters):
    n = req["requests"]
    prompts = req["prompts"]
    jobs = []
    for j in range(n):
        # As the Rust side: adapter j % N, or with more adapters than requests one each, spread.
        adapter = j * adapters // n if adapters > n else j % max(adapters, 1)
        body = {
            "prompt": prompts[j % len(prompts)],
            "n_predict": req["max_tokens"],
            "temperature": 0.0,
            "stream": True,
            "cache_prompt": False,
        }
        if adapters:
            body["lora"] = [{"id": adapter, "scale": 1.0}]
        jobs.append(body)
    lock = threading.Lock()
    nxt = iter(jobs)
    ttfts, tokens, errors = [], [], []

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
        while True:
            with lock:
                body = next(nxt, None)
            if body is None or errors:
                return
            try:
                ttft, count = one(conn, body)
            except Exception as e:  # report the first failure, stop the run
                errors.append(repr(e))
                return
            with lock:
                ttfts.append(ttft * 1e3)
                tokens.append(count)

    threads = [threading.Thread(target=worker) for _ in range(req["streams"])]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{adapters} adapters: {errors[0]}")
    total = sum(tokens)
    return {
        "adapters": adapters,
        "requests": n,
        "tokens": total,
        "tok_s": total / wall,
        "ttft_p50_ms": percentile(ttfts, 50),
        "ttft_p99_ms": percentile(ttfts, 99),
    }


def main():
    with open(sys.argv[1]) as f:
        req = json.load(f)
    port = free_port()
    streams = req["streams"]
    longest = max(len(p) for p in req["prompts"])
    per_slot = 64 * math.ceil((longest + req["max_tokens"] + 16) / 64)
    cmd = [
        req["server"], "-m", req["model"],
        "--host", "127.0.0.1", "--port", str(port),
        "--threads", str(req["threads"]), "--threads-batch", str(req["threads"]),
        "--parallel", str(streams), "--cont-batching",
        "-c", str(per_slot * streams),
    ]
    if req["loras"]:
        cmd += ["--lora", ",".join(req["loras"]), "--lora-init-without-apply"]
    with open(req["log"], "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, proc, req["log"])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/props")
        props = json.loads(conn.getresponse().read() or b"{}")
        print(f"llama-server {props.get('build_info', '?')}, {len(req['loras'])} adapters",
              file=sys.stderr)
        # Warm-up, as the Rust side does: one short base round.
        run_config(port, dict(req, requests=streams, max_tokens=8), 0)
        results = []
        for adapters in req["configs"]:
            r = run_config(port, req, adapters)
            print(f"  llama-server, {adapters} adapters: {r['tok_s']:.1f} tok/s", file=sys.stderr)
            results.append(r)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
