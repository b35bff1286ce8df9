#!/usr/bin/env bash
# Creates the Python venv for bench/datatrove_minhash.py and installs the pinned datatrove
# plus what its MinHash pipeline imports but datatrove does not depend on: xxhash (shingle hash),
# regex (text normalisation), spaCy (English word tokenizer; blank model, nothing downloaded),
# orjson (JSONL reader/writer) and tokenizers (imported by datatrove.pipeline.dedup's __init__).
# Idempotent: does nothing when every pin is already installed.
# Prints the venv's python path as its last line.
#
#   VENV=/some/where bash bench/setup_datatrove.sh   # default: ~/.cache/openledger/venv-datatrove
set -euo pipefail

VENV="${VENV:-$HOME/.cache/openledger/venv-datatrove}"
PINS=(
  "datatrove==0.10.1"
  "xxhash==3.8.2"
  "regex==2026.11.19"
  "spacy==3.8.18"
  "orjson==3.13.0"
  "tokenizers==0.23.3"
)
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" >&2
fi

# pip's own check: is every pin installed at exactly that version?
if ! "$PY" - "${PINS[@]}" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(name) != want:
        sys.exit(1)
EOF
then
  "$PY" -m pip install --quiet --disable-pip-version-check "${PINS[@]}" >&2
fi

echo "$PY"
