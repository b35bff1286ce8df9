#!/usr/bin/env bash
# PyTorch + transformers + PEFT for `openledger bench-train --peft-python`, in a venv of their
# own. Prints the venv's python. PyPI's torch wheels for Linux pull in the CUDA runtime
# packages (several GB) even on a CPU-only machine.
set -euo pipefail
VENV="${OPENLEDGER_PEFT_VENV:-$HOME/.cache/openledger/venv-peft}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch, peft, transformers' 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q torch transformers peft >&2
fi
echo "$VENV/bin/python"
