#!/usr/bin/env bash
# End-to-end tests with real Ethereum clients (cast, ethers v6, viem).
#
#   tests/js/run.sh                       # against target/debug/openledger
#   NODE_UNDER_TEST=anvil tests/js/run.sh # against anvil (reference)
#   tests/js/run.sh tests/js/cast.test.js # selected files only
#
# Environment:
#   NODE_UNDER_TEST   anvil | openledger (default openledger)
#   OPENLEDGER_BIN    node binary (default $CARGO_TARGET_DIR/debug/openledger or target/debug/openledger)
#   RPC_METHOD_LOG    file: record every JSON-RPC call the clients make (summary printed at the end)
#   E2E_SKIP_INSTALL  1: never run npm ci (use node_modules as is)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

export NODE_UNDER_TEST="${NODE_UNDER_TEST:-openledger}"

# --- dependencies -------------------------------------------------------------
# npm ci only when node_modules is missing or was installed from another lockfile,
# so repeated runs work offline.
stamp="$HERE/node_modules/.e2e-lock-sha256"
want="$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)"
if [[ "${E2E_SKIP_INSTALL:-0}" != 1 ]]; then
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "run.sh: installing test dependencies (npm ci)"
    # A registry hiccup should not fail the suite: try a few times.
    for attempt in 1 2 3; do
      if (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error); then break; fi
      if [[ $attempt == 3 ]]; then echo "run.sh: npm ci failed 3 times" >&2; exit 1; fi
      echo "run.sh: npm ci failed (attempt $attempt), retrying in 10 s" >&2
      sleep 10
    done
    echo "$want" > "$stamp"
  fi
fi

# --- node under test ----------------------------------------------------------
if [[ "$NODE_UNDER_TEST" == openledger ]]; then
  if [[ -n "${OPENLEDGER_BIN:-}" ]]; then
    bin="$OPENLEDGER_BIN"
  else
    bin="${CARGO_TARGET_DIR:-target}/debug/openledger"
  fi
  if [[ ! -x "$bin" ]]; then
    echo "run.sh: openledger binary not found at $bin (cargo build first, or set OPENLEDGER_BIN, or NODE_UNDER_TEST=anvil)" >&2
    exit 1
  fi
fi

# --- run ------------------------------------------------------------------------
if [[ $# -gt 0 ]]; then
  files=("$@")
else
  files=("$HERE"/*.test.js)
fi

if [[ -n "${RPC_METHOD_LOG:-}" ]]; then
  RPC_METHOD_LOG="$(realpath -m "$RPC_METHOD_LOG")"
  export RPC_METHOD_LOG
  : > "$RPC_METHOD_LOG"
fi

echo "run.sh: NODE_UNDER_TEST=$NODE_UNDER_TEST, $(node --version), ${#files[@]} test file(s)"
status=0
node --test --test-concurrency=1 --test-timeout=300000 "${files[@]}" || status=$?

if [[ -n "${RPC_METHOD_LOG:-}" && -s "$RPC_METHOD_LOG" ]]; then
  echo
  echo "JSON-RPC methods used by the clients (from $RPC_METHOD_LOG):"
  node "$HERE/rpc-summary.js" "$RPC_METHOD_LOG"
fi
exit "$status"
