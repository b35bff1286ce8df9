#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (the C++ HTTP server with continuous batching and per-request
# LoRA selection) from the llama.cpp sources vendored in the llama-cpp-python sdist, for
# `openledger bench-serve --llama-server`. Also makes a venv with cmake (none is installed
# system-wide here) and numpy + gguf (for anchors/make_lora_gguf.py, which writes the GGUF
# adapters). Slow the first time (10–20 min on 2 cores); idempotent after. Prints the venv's
# python and then the llama-server binary as its last two lines.
#
# CPU features: a native build (-DGGML_NATIVE=ON), except on Intel machines with AMX, where
# llama.cpp's native build crashes in its AMX matmul path on the first decode (ANCHORS.md):
# there AVX2/AVX-512 are named explicitly and AMX is turned off.
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="${LLAMA_SERVER_SRC:-$HOME/.cache/openledger/llama-server-src}"
VENV="${VENV:-$HOME/.cache/openledger/venv-llama-server}"
JOBS="${JOBS:-2}"
PY="$VENV/bin/python"
SRC="$ROOT/llama_cpp_python-$VERSION/vendor/llama.cpp"
BUILD="$ROOT/build-$VERSION"
BIN="$BUILD/bin/llama-server"

if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV" >&2
fi
if ! "$PY" -c 'import numpy, gguf' 2>/dev/null || [ ! -x "$VENV/bin/cmake" ]; then
  "$PY" -m pip install --quiet cmake numpy gguf >&2
fi
CMAKE="${CMAKE:-$(command -v cmake || echo "$VENV/bin/cmake")}"

if [ ! -x "$BIN" ]; then
  mkdir -p "$ROOT"
  if [ ! -f "$SRC/CMakeLists.txt" ]; then
    # Only llama-cpp-python itself as source: with `--no-binary :all:` pip would also build its
    # build backend's own dependencies from source just to read the sdist's metadata.
    "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$VERSION" -d "$ROOT" >&2
    tar -xzf "$ROOT/llama_cpp_python-$VERSION.tar.gz" -C "$ROOT"
  fi
  FLAGS=(-DGGML_NATIVE=ON)
  if grep -qw amx_tile /proc/cpuinfo; then
    FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
      -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON
      -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
  fi
  "$CMAKE" -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF "${FLAGS[@]}" >&2
  "$CMAKE" --build "$BUILD" --target llama-server -j "$JOBS" >&2
fi
echo "$PY"
echo "$BIN"
