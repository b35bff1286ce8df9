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
if ! "$PY" -c 'import llama_cpp, numpy' 2>/dev/null; then
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$PY" -m pip install --quiet --no-binary llama-cpp-python 'llama-cpp-python==0.3.36' numpy >&2
fi
echo "$PY"
