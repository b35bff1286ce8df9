// A datanet's whole life against a running node: create → contribute → review → snapshot →
// export → verify-row, from the `openledger datanet` CLI, the HTTP API and `cast send`, with a
// permissioned datanet whose rows only a grantee can read.
// OpenLedger only (anvil has no data service).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { promisify } from 'node:util';
import { castAgainst } from './lib.js';
import { foundryBin, openledgerBin, startNode, IS_ANVIL } from './harness.js';

const execFileP = promisify(execFile);
const CAST = foundryBin('cast');
const DATANETS = '0x0000000000000000000000000000000000000f02';

const DOCS = [
  'The harbour master logged forty arrivals in March, most of them grain barges from the upper river, and asked for two more pilots before summer.',
  'A new reading room opened on the second floor of the library, with quiet desks, long opening hours and regional newspapers going back to 1890.',
  'The orchard cooperative replaced its old cider press and reports that the new one handles twice the apples per hour while wasting less juice.',
  'Volunteers repainted the footbridge over the canal during the long weekend, finishing a day early thanks to dry weather and borrowed scaffolding.',
];

describe('datanet data service end to end', { skip: IS_ANVIL && 'OpenLedger only' }, () => {
  let node;
  let work;
  const cli = async (key, ...args) => {
    const full = ['datanet', ...args, '--rpc', node.rpcUrl, '--api', node.apiUrl];
    if (key) full.push('--private-key', key);
    try {
      const { stdout } = await execFileP(openledgerBin(), full, { timeout: 120_000 });
      return { ok: true, out: stdout };
    } catch (e) {
      return { ok: false, out: `${e.stdout}\n${e.stderr}` };
    }
  };
  const must = async (...args) => {
    const r = await cli(...args);
    assert.ok(r.ok, r.out);
    return r.out;
  };
  const cast = (...args) => castAgainst(node, CAST)(...args);

  before(async () => {
    node = await startNode();
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'openledger-datanet-'));
    // The API starts right after the RPC server; wait until it answers.
    for (let i = 0; i < 100; i++) {
      try {
        await fetch(`${node.apiUrl}/v1/datanets/0`);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });
  after(async () => {
    await node?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  test('create, contribute, review, snapshot, grant, export and verify a permissioned datanet', async () => {
    const [owner, alice, curator, reader, stranger] = node.accounts;

    const created = await must(owner.privateKey, 'create', '--name', 'town-news', '--license', 'CC-BY-4.0',
      '--schema', 'text', '--permissioned', '--curator', curator.address, '--pii', 'reject',
      '--description', 'Local news items');
    const datanet = created.match(/datanet (\d+) created/)[1];

    // A directory of JSONL (with a duplicate, a PII row and a broken line), CSV and Markdown.
    const dir = path.join(work, 'upload');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'a.jsonl'), [
      JSON.stringify({ text: DOCS[0] }),
      JSON.stringify({ text: DOCS[1] }),
      JSON.stringify({ text: DOCS[0] }),
      JSON.stringify({ text: `${DOCS[2]} Mail clerk@town.example for a copy.` }),
      '{"text": broken',
    ].join('\n') + '\n');
    fs.writeFileSync(path.join(dir, 'b.csv'), `text\n"${DOCS[2]}"\n`);
    fs.writeFileSync(path.join(dir, 'c.md'), `# Footbridge\n\n${DOCS[3]}\n`);
    const contributed = await must(alice.privateKey, 'contribute', '--datanet', datanet, dir);
    assert.match(contributed, /7 records read from 3 file\(s\): 4 accepted/);
    assert.match(contributed, /exact_duplicate/);
    assert.match(contributed, /a\.jsonl:5: not valid JSON/);
    assert.match(contributed, /personal data/);
    const contribution = contributed.match(/contribution (\d+) recorded on chain/)[1];

    // The same directory again: same content root (idempotent upload).
    const again = await must(null, 'contribute', '--datanet', datanet, dir, '--no-submit');
    const root = contributed.match(/content root (0x[0-9a-f]{64})/)[1];
    assert.ok(again.includes(root), again);

    // The HTTP API shows the on-chain record and this node's report.
    const res = await fetch(`${node.apiUrl}/v1/contributions/${contribution}`);
    const body = await res.json();
    assert.equal(body.contribution.content_root, root);
    assert.equal(body.record.row_count, 4);
    assert.equal(body.contribution.status, 0);

    // Only curators review: the CLI says so before sending anything.
    const notCurator = await cli(stranger.privateKey, 'review', contribution, '--accept');
    assert.equal(notCurator.ok, false);
    assert.match(notCurator.out, /is not a curator of this datanet/);
    // The curator approves with cast, as any EVM wallet would.
    await cast('send', '--private-key', curator.privateKey, DATANETS, 'review(uint64,bool,uint16)', contribution, 'true', '0');

    const snap = await must(owner.privateKey, 'snapshot', '--datanet', datanet);
    const m = snap.match(/snapshot (\d+) of datanet \d+ published: (\d+) rows/);
    assert.ok(m, snap);
    const [snapshot, rows] = [m[1], Number(m[2])];
    assert.equal(rows, 4);

    // Nobody without a grant reads the rows: anonymous, or signed by a stranger.
    const anonymous = await fetch(`${node.apiUrl}/v1/snapshots/${snapshot}/rows`);
    assert.equal(anonymous.status, 401);
    const refused = await cli(stranger.privateKey, 'export', '--snapshot', snapshot, '--out', path.join(work, 'x'));
    assert.equal(refused.ok, false);
    assert.match(refused.out, /holds no unexpired grant/);

    // Request (cast) → grant (CLI) → export (CLI, signed request).
    await cast('send', '--private-key', reader.privateKey, DATANETS, 'requestAccess(uint64,string)', datanet, 'training a town-news model');
    await must(owner.privateKey, 'grant', '--datanet', datanet, '--to', reader.address, '--days', '7');
    const out = path.join(work, 'export');
    await must(reader.privateKey, 'export', '--snapshot', snapshot, '--out', out);
    const lines = fs.readFileSync(path.join(out, 'rows.jsonl'), 'utf8').trim().split('\n');
    assert.equal(lines.length, 4);
    const card = JSON.parse(fs.readFileSync(path.join(out, 'card.json'), 'utf8'));
    assert.equal(card.rows, 4);
    assert.equal(card.license, 'CC-BY-4.0');
    assert.equal(card.contributors[alice.address], 4);
    assert.ok(fs.statSync(path.join(out, 'rows.parquet')).size > 0);
    assert.match(fs.readFileSync(path.join(out, 'README.md'), 'utf8'), /town-news/);

    // verify-row checks an exported line against the root recorded on chain.
    const onChain = await cast('call', DATANETS, 'getSnapshot(uint64)(uint64,bytes32,uint64,uint64,uint64)', snapshot);
    assert.ok(onChain.includes(card.snapshot_root), onChain);
    const verified = await must(reader.privateKey, 'verify-row', '--snapshot', snapshot, '--row', lines[2]);
    assert.match(verified, /is in snapshot/);
    const foreign = await cli(reader.privateKey, 'verify-row', '--snapshot', snapshot, '--row', JSON.stringify({ text: 'not in the datanet at all, surely' }));
    assert.equal(foreign.ok, false);
    assert.match(foreign.out, /is not in snapshot/);

    // Revoked: refused again.
    await must(owner.privateKey, 'revoke', '--datanet', datanet, '--from', reader.address);
    const revoked = await cli(reader.privateKey, 'export', '--snapshot', snapshot, '--out', path.join(work, 'y'));
    assert.equal(revoked.ok, false);
    assert.match(revoked.out, /holds no unexpired grant/);
  });

  test('contributions to a missing datanet are refused before anything is stored', async () => {
    const [, alice] = node.accounts;
    const file = path.join(work, 'one.jsonl');
    fs.writeFileSync(file, JSON.stringify({ text: DOCS[0] }) + '\n');
    const r = await cli(alice.privateKey, 'contribute', '--datanet', '99', file);
    assert.equal(r.ok, false);
    assert.match(r.out, /datanet 99 does not exist/);
  });

  test('kill -9 in the middle of an upload leaves no contribution, and re-uploads are idempotent', async () => {
    const [owner] = node.accounts;
    const created = await must(owner.privateKey, 'create', '--name', 'crash-test', '--license', 'CC0-1.0');
    const datanet = created.match(/datanet (\d+) created/)[1];
    // 2,000 distinct rows of pseudo-random words (xorshift32 from a fixed seed: same every run).
    const syllables = ['ka', 'ro', 'mi', 'tel', 'an', 'sor', 've', 'lun', 'dra', 'po', 'ni', 'gar', 'est', 'ul', 'bri', 'om'];
    let x = 2463534242;
    const next = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
    const word = () => Array.from({ length: 1 + (next() % 3) }, () => syllables[next() % syllables.length]).join('');
    const lines = [];
    for (let i = 0; i < 2000; i++) {
      lines.push(JSON.stringify({ text: Array.from({ length: 40 }, word).join(' ') + '.' }));
    }
    const body = lines.join('\n') + '\n';

    const begin = await fetch(`${node.apiUrl}/v1/datanets/${datanet}/uploads`, { method: 'POST' });
    const { upload_id: upload } = await begin.json();
    // Send half of the file, then kill the node while the request is still open.
    const url = new URL(`${node.apiUrl}/v1/uploads/${upload}/files/big.jsonl`);
    const req = http.request({ host: url.hostname, port: url.port, path: url.pathname, method: 'PUT',
      headers: { 'content-length': Buffer.byteLength(body) } });
    req.on('error', () => {});
    req.write(body.slice(0, body.length / 2));
    await new Promise((r) => setTimeout(r, 300));
    await node.restart();
    req.destroy();
    for (let i = 0; i < 100; i++) {
      try { await fetch(`${node.apiUrl}/v1/datanets/0`); break; } catch { await new Promise((r) => setTimeout(r, 100)); }
    }
    const staging = path.join(node.datadir, 'data', 'staging');
    assert.deepEqual(fs.readdirSync(staging), [], 'the unsealed upload is gone');
    const sealDead = await fetch(`${node.apiUrl}/v1/uploads/${upload}/seal`, { method: 'POST' });
    assert.equal(sealDead.status, 404);

    // The whole file, twice: the same content root both times.
    const file = path.join(work, 'big.jsonl');
    fs.writeFileSync(file, body);
    const first = await must(null, 'contribute', '--datanet', datanet, file, '--no-submit');
    const second = await must(null, 'contribute', '--datanet', datanet, file, '--no-submit');
    const root = (out) => out.match(/content root (0x[0-9a-f]{64})/)[1];
    assert.equal(root(first), root(second));
    assert.match(first, /2000 accepted/);
  });
});
