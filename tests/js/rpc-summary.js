#!/usr/bin/env node
// Summarises a log written by the recording proxy (RPC_METHOD_LOG=<file>):
// one row per JSON-RPC method with call counts, transports, batching and the
// test files that used it.
//
//   node tests/js/rpc-summary.js /tmp/rpc-methods.jsonl

import fs from 'node:fs';

const file = process.argv[2];
if (!file) {
  console.error('usage: node rpc-summary.js <RPC_METHOD_LOG file>');
  process.exit(2);
}

const rows = new Map();
let batches = 0;
for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
  if (!line.trim()) continue;
  const e = JSON.parse(line);
  let r = rows.get(e.method);
  if (!r) {
    r = { method: e.method, calls: 0, batched: 0, transports: new Set(), files: new Set(), tags: new Set() };
    rows.set(e.method, r);
  }
  r.calls++;
  if (e.batch > 0) {
    r.batched++;
    batches++;
  }
  r.transports.add(e.transport);
  for (const t of e.tags || []) r.tags.add(t);
  r.files.add(e.file.replace(/\.test\.js$/, ''));
}

const sorted = [...rows.values()].sort((a, b) => a.method.localeCompare(b.method));
const w = Math.max(6, ...sorted.map((r) => r.method.length));
console.log(`${'method'.padEnd(w)}  calls  in-batch  transport  tags/kinds              test files`);
for (const r of sorted) {
  console.log(
    `${r.method.padEnd(w)}  ${String(r.calls).padStart(5)}  ${String(r.batched).padStart(8)}  ${[...r.transports].sort().join('+').padEnd(9)}  ${[...r.tags].sort().join(',').padEnd(22)}  ${[...r.files].sort().join(', ')}`,
  );
}
console.log(`\n${sorted.length} distinct methods; ${batches} calls arrived inside JSON-RPC batch arrays`);
