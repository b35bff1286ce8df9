#!/usr/bin/env bash
# Creates a venv with llama-cpp-python (built from its sdist, i.e. llama.cpp compiled here with
# this CPU's features) for `openledger bench-model --llama-cpp-python`. Slow the first time
# (10–20 min on 2 cores); idempotent after. Prints the venv's python as its last line.
set -euo pipefail
VENV="${VENV:-$HOME/.cache/openledger/venv-llama-cpp}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV" >&2
fi
# On AMX-capable Intel CPUs llama.cpp's native build crashes in its AMX matmul path on the
# first decode: build for AVX2/AVX-512 explicitly there, AMX off.
if [ -z "${CMAKE_ARGS:-}" ] && grep -q ' amx_tile' /proc/cpuinfo; then
  export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
fi
if ! "$PY" -c 'import llama_cpp, numpy' 2>/dev/null; then
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$PY" -m pip install --quiet --no-binary llama-cpp-python 'llama-cpp-python==0.3.36' numpy >&2
fi
echo "$PY"
