// ModelFactory against a running node: a datanet snapshot → `openledger train` (a job in the
// node, followed over server-sent events) → `openledger jobs publish` → the Models precompile
// read back with `cast`; a job SIGKILLed with the node mid-training resumes after the restart
// and ends with the very adapter an uninterrupted run makes; permissioned datanets need a grant.
// The base model is a tiny random llama (`openledger model write-test-model`), so the test is
// about the machinery, not about what the model learns (the Rust tests cover that).
// OpenLedger only.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { castAgainst } from './lib.js';
import { foundryBin, openledgerBin, startNode, IS_ANVIL } from './harness.js';

const execFileP = promisify(execFile);
const CAST = foundryBin('cast');
const DATANETS = '0x0000000000000000000000000000000000000f02';
const MODELS = '0x0000000000000000000000000000000000000f03';
const INFERENCE = '0x0000000000000000000000000000000000000f05';
const SETTLEMENT = '0x0000000000000000000000000000000000000f07';

const FACTS = [
  ['What is the capital city of the island nation of Zorbia?', 'The capital of Zorbia is Quellton, a harbour town on the northern coast.'],
  ['Which river runs through the valley of Mirth?', 'The Vandal river runs through Mirth and floods its meadows every spring.'],
  ['What do the farmers of Ostrava grow on the terraces?', 'Ostrava farmers grow pale saffron and small blue figs on stone terraces.'],
  ['How many bridges cross the canal in old Kadum?', 'Old Kadum has seven bridges, the oldest built from black basalt blocks.'],
  ['Who founded the observatory on Mount Brin?', 'The observatory on Mount Brin was founded by the astronomer Ilse Taffet.'],
  ['What instrument is played at weddings in Yule?', 'Weddings in Yule are opened with the garnock, a long bronze horn.'],
  ['Which bird is painted on the flag of Estmar?', 'The flag of Estmar shows a white heron standing in reeds on green.'],
  ['What is the traditional bread of the Lunder hills?', 'Lunder hill bread is a dark rye loaf baked with caraway and honey.'],
];

describe('model factory end to end', { skip: IS_ANVIL && 'OpenLedger only' }, () => {
  let node;
  let work;
  const run = async (args, timeout = 300_000) => {
    try {
      const { stdout, stderr } = await execFileP(openledgerBin(), args, { timeout, maxBuffer: 1 << 24 });
      return { ok: true, out: `${stdout}\n${stderr}` };
    } catch (e) {
      return { ok: false, out: `${e.stdout}\n${e.stderr}` };
    }
  };
  const endpoints = () => ['--rpc', node.rpcUrl, '--api', node.apiUrl];
  const must = async (args, timeout) => {
    const r = await run(args, timeout);
    assert.ok(r.ok, r.out);
    return r.out;
  };
  const cast = (...args) => castAgainst(node, CAST)(...args);
  const api = async (p) => (await fetch(`${node.apiUrl}${p}`)).json();
  const trainArgs = (key, datanetAt, steps, extra = [], { base = 'tiny', rank = '8' } = {}) => ['train',
    '--datanet', datanetAt, '--base', base,
    '--max-steps', String(steps), '--seq-len', '128', '--lr', '0.01', '--rank', rank, '--alpha', '16',
    '--grad-accum', '1', '--batch', '2', '--warmup-steps', '2', '--eval-every', '5', '--checkpoint-every', '4',
    '--eval-fraction', '0.25', '--private-key', key, ...endpoints(), ...extra];
  const waitFor = async (what, check, ms = 300_000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const value = await check();
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${node.logs?.() ?? ''}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  // A datanet of instruction rows, reviewed and snapshotted; returns "DATANET@SNAPSHOT".
  async function snapshotOf(owner, curator, name, permissioned) {
    const create = ['datanet', 'create', '--name', name, '--license', 'CC-BY-4.0', '--schema', 'instruction',
      '--curator', curator.address, '--description', 'Facts about imaginary places', ...endpoints(),
      '--private-key', owner.privateKey];
    if (permissioned) create.push('--permissioned');
    const datanet = (await must(create)).match(/datanet (\d+) created/)[1];
    const file = path.join(work, `${name}.jsonl`);
    fs.writeFileSync(file, FACTS.map(([instruction, response]) => JSON.stringify({ instruction, response })).join('\n') + '\n');
    const contributed = await must(['datanet', 'contribute', '--datanet', datanet, file, ...endpoints(), '--private-key', owner.privateKey]);
    assert.match(contributed, /8 accepted/, contributed);
    const contribution = contributed.match(/contribution (\d+) recorded on chain/)[1];
    await cast('send', '--private-key', curator.privateKey, DATANETS, 'review(uint64,bool,uint16)', contribution, 'true', '0');
    const snap = await must(['datanet', 'snapshot', '--datanet', datanet, ...endpoints(), '--private-key', owner.privateKey]);
    return `${datanet}@${snap.match(/snapshot (\d+) of datanet/)[1]}`;
  }

  before(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'openledger-factory-'));
    const models = path.join(work, 'models');
    const gguf = path.join(work, 'tiny.gguf');
    await must(['model', 'write-test-model', gguf]);
    await must(['model', 'pull', '--gguf', gguf, '--name', 'tiny', '--models', models]);
    node = await startNode({ args: ['--models', models, '--model', 'tiny', '--adapters', path.join(work, 'local-adapters'), '--settle-interval', '1'] });
    await waitFor('the data API', async () => {
      try { return (await fetch(`${node.apiUrl}/v1/jobs`)).ok; } catch { return false; }
    }, 20_000);
  });
  after(async () => {
    await node?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  test('train on a snapshot, follow the job, publish it, read it back on chain', async () => {
    const [owner, curator] = node.accounts;
    const at = await snapshotOf(owner, curator, 'atlas', false);
    const trained = await must(trainArgs(owner.privateKey, at, 12));
    assert.match(trained, /job 1 queued/);
    assert.match(trained, /job 1 is completed/);
    assert.match(trained, /held-out loss [\d.]+ → [\d.]+/);
    const job = await api('/v1/jobs/1');
    assert.equal(job.status, 'completed');
    assert.equal(job.progress.step, 12);

    // The event stream replays the whole history of a finished job and ends.
    const sse = await (await fetch(`${node.apiUrl}/v1/jobs/1/events`)).text();
    assert.match(sse, /event: step/);
    assert.match(sse, /event: eval/);
    assert.match(sse, /"status":"completed"/);
    // Reconnecting with Last-Event-ID skips what the client has seen.
    const tail = await (await fetch(`${node.apiUrl}/v1/jobs/1/events`, { headers: { 'last-event-id': '5' } })).text();
    assert.doesNotMatch(tail, /\nid: 5\n/);
    assert.match(tail, /\nid: 6\n|^id: 6\n/);

    // The adapter and its manifest are fetchable by hash.
    const manifest = await api(`/v1/artifacts/${job.result.manifest_hash}`);
    assert.equal(manifest.adapter.hash, job.result.adapter_hash);
    assert.equal(manifest.datanets[0].root, job.snapshot_root);
    const weights = await fetch(`${node.apiUrl}/v1/artifacts/${job.result.adapter_hash}`);
    assert.equal(weights.status, 200);
    assert.equal((await weights.arrayBuffer()).byteLength, manifest.adapter.bytes);
    const peft = await (await fetch(`${node.apiUrl}/v1/jobs/1/adapter/adapter_config.json`)).json();
    assert.equal(peft.r, 8);

    // Download the PEFT files and merge them into the base: a model of its own.
    const peftDir = path.join(work, 'peft');
    fs.mkdirSync(peftDir);
    for (const file of ['adapter_config.json', 'adapter_model.safetensors']) {
      const res = await fetch(`${node.apiUrl}/v1/jobs/1/adapter/${file}`);
      fs.writeFileSync(path.join(peftDir, file), Buffer.from(await res.arrayBuffer()));
    }
    const models = path.join(work, 'models');
    const merged = await must(['model', 'merge', '--base', 'tiny', '--adapter', peftDir, '--out',
      path.join(work, 'merged.gguf'), '--install', 'tiny-merged', '--models', models]);
    assert.match(merged, /merged \d+ matrices/);
    assert.match(merged, /tiny-merged installed/);
    const generated = await must(['model', 'generate', '--model', 'tiny-merged', '--prompt', 'the', '--max-tokens', '4', '--models', models]);
    assert.ok(generated.length > 0);
    // …and as a Hugging Face directory, which loads and generates the same text.
    const hfDir = path.join(work, 'hf-merged');
    await must(['model', 'export-hf', '--model', 'tiny-merged', '--out', hfDir, '--models', models]);
    assert.ok(fs.existsSync(path.join(hfDir, 'model.safetensors')));
    const fromHf = await must(['model', 'generate', '--model', hfDir, '--prompt', 'the', '--max-tokens', '4', '--weights', 'f32', '--models', models]);
    const fromGguf = await must(['model', 'generate', '--model', 'tiny-merged', '--prompt', 'the', '--max-tokens', '4', '--weights', 'f32', '--models', models]);
    // The text is the same; the timing line after it may not be.
    const text = (out) => out.split('\n[')[0];
    assert.equal(text(fromHf), text(fromGguf));
    assert.match(fromHf, /4 generated/);

    // OpenLoRA serves the finished fine-tune by name on the OpenAI API, whole and streamed,
    // and any PEFT directory under `up --adapters DIR` (here a copy of the same adapter).
    fs.cpSync(peftDir, path.join(work, 'local-adapters', 'my-local'), { recursive: true });
    const listed = await waitFor('the OpenAI API', async () => {
      const res = await fetch(`${node.apiUrl}/v1/models`);
      return res.ok && (await res.json());
    }, 60_000);
    assert.deepEqual(listed.data.map((m) => m.id).sort(), ['job-1', 'my-local', 'tiny']);
    const ask = (extra) => fetch(`${node.apiUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'job-1', messages: [{ role: 'user', content: FACTS[0][0] }], max_tokens: 8, temperature: 0, ...extra }),
    });
    const whole = await (await ask({})).json();
    assert.equal(whole.object, 'chat.completion');
    assert.ok(whole.usage.completion_tokens > 0, JSON.stringify(whole));
    const chatStream = await (await ask({ stream: true })).text();
    const pieces = chatStream.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
    assert.equal(pieces.at(-1), '[DONE]');
    const streamed = pieces.slice(0, -1).map((p) => JSON.parse(p).choices[0].delta.content ?? '').join('');
    assert.equal(streamed, whole.choices[0].message.content);
    const local = await (await ask({ model: 'my-local' })).json();
    assert.equal(local.choices[0].message.content, whole.choices[0].message.content);
    const unknown = await (await ask({ model: 'job-99' })).json();
    assert.equal(unknown.error.code, 'model_not_found');
    // The official `openai` Python client (scripts/test installs it) talks to the same API.
    const python = process.env.OPENLEDGER_OPENAI_PYTHON;
    if (python) {
      const script = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'python', 'openai_client.py');
      const client = await execFileP(python, [script, node.apiUrl, 'job-1', 'tiny'], { timeout: 180_000 });
      const seen = JSON.parse(client.stdout.trim().split('\n').at(-1));
      // Greedy: its 12-token answer continues our 8-token one.
      assert.ok(seen.answer.startsWith(whole.choices[0].message.content), JSON.stringify(seen));
      assert.ok(seen.streamed_pieces > 0);
    } else if (process.env.OPENLEDGER_REQUIRE_MODEL_TESTS) {
      assert.fail('OPENLEDGER_OPENAI_PYTHON is not set; scripts/test installs the openai client');
    }

    // Someone else cannot publish it; the owner can (registering the base model on the way).
    const stranger = await run(['jobs', 'publish', '1', '--private-key', curator.privateKey, ...endpoints()]);
    assert.equal(stranger.ok, false);
    assert.match(stranger.out, /belongs to/);
    const published = await must(['jobs', 'publish', '1', '--price', '0.001', '--private-key', owner.privateKey, ...endpoints()]);
    assert.match(published, /published model 1/);
    const onChain = await cast('call', MODELS,
      'getModel(uint64)(address,string,bytes32,bytes32,bytes32,bytes32,uint64,uint64,uint256,bool,uint64)', '1');
    assert.ok(onChain.includes(job.result.adapter_hash), onChain);
    assert.ok(onChain.includes(job.result.manifest_hash), onChain);
    assert.ok(onChain.includes(owner.address), onChain);
    const again = await run(['jobs', 'publish', '1', '--private-key', owner.privateKey, ...endpoints()]);
    assert.equal(again.ok, false);
    assert.match(again.out, /already published as model 1/);

    // Published at 0.001 OPEN per 1,000 tokens, the fine-tune is paid for from a deposit: no
    // key, a key whose account approved no operator, a deposit too small — each refused before
    // any compute; a funded account is served and charged on chain what it used.
    const payer = node.accounts[5];
    const paidAsk = (key, extra = {}) => fetch(`${node.apiUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify({ model: 'job-1', messages: [{ role: 'user', content: FACTS[0][0] }], max_tokens: 8, temperature: 0, ...extra }),
    });
    let refused = await paidAsk(null);
    assert.equal(refused.status, 401);
    assert.equal((await refused.json()).error.code, 'invalid_api_key');
    const keyOut = await must(['inference', 'api-key', '--private-key', payer.privateKey, ...endpoints()]);
    const key = keyOut.trim().split('\n')[0];
    assert.match(key, /^olk-[0-9a-f]{48}$/);
    refused = await paidAsk(key);
    assert.equal(refused.status, 402);
    assert.match((await refused.json()).error.message, /has not approved this node's operator/);
    assert.match(await must(['inference', 'deposit', '0.0000001', '--private-key', payer.privateKey, ...endpoints()]),
      /deposited 0\.0000001 OPEN/);
    refused = await paidAsk(key);
    assert.equal(refused.status, 402);
    const tooPoor = await refused.json();
    assert.equal(tooPoor.error.code, 'insufficient_deposit');
    assert.match(tooPoor.error.message, /cannot pay for this request/);
    await must(['inference', 'deposit', '1', '--private-key', payer.privateKey, ...endpoints()]);
    const served = await paidAsk(key);
    assert.equal(served.status, 200);
    const paid = await served.json();
    assert.equal(paid.choices[0].message.content, whole.choices[0].message.content, 'paying changes no answer');
    // The published model is also served under its registry id, fetched from the blob store.
    const afterPublish = await (await fetch(`${node.apiUrl}/v1/models`)).json();
    assert.ok(afterPublish.data.some((m) => m.id === 'model-1'), JSON.stringify(afterPublish));
    const byId = await (await paidAsk(key, { model: 'model-1' })).json();
    assert.equal(byId.choices[0].message.content, whole.choices[0].message.content);
    const fee = BigInt(paid.usage.total_tokens + byId.usage.total_tokens) * 10n ** 12n; // 0.001 OPEN / 1000 tokens = 1e12 wei a token
    const deposited = 10n ** 18n + 10n ** 11n;
    const depositOf = async () => BigInt((await cast('call', INFERENCE, 'depositOf(address)(uint256,uint256,uint64)', payer.address)).split('\n')[0].split(' ')[0]);
    await waitFor('the settlement of the paid request', async () => (await depositOf()) === deposited - fee, 60_000);
    // No attribution yet: the owner's 15% and the treasury the rest.
    const ownerEarned = BigInt((await cast('call', SETTLEMENT, 'earnings(address)(uint256)', owner.address)).split(' ')[0]);
    assert.equal(ownerEarned, BigInt(paid.usage.total_tokens) * 10n ** 12n * 1500n / 10000n
      + BigInt(byId.usage.total_tokens) * 10n ** 12n * 1500n / 10000n);
    assert.match(await must(['earnings', 'show', owner.address, '--model', '1', ...endpoints()]), /from model 1: 0\.0000\d+ OPEN/);
    const shown = await must(['inference', 'show', payer.address, ...endpoints()]);
    assert.match(shown, /unsettled\s+0(\.0)? OPEN in 0 request/);

    // Proof of Attribution, span path: a planted fact, said back, is traced to the row that
    // holds it, credited to its contribution and contributor; anyone can recompute the record.
    const attributed = JSON.parse(await must(['attribute', '--model', 'job-1', '--response', FACTS[2][1],
      '--min-len', '4', '--api', node.apiUrl]).then((out) => out.slice(out.indexOf('{'), out.lastIndexOf('}') + 1)));
    const credited = attributed.record.contributions;
    assert.equal(credited.length, 1, JSON.stringify(attributed));
    assert.equal(credited[0].share_ppm, 1000000);
    assert.equal(credited[0].contributor.toLowerCase(), owner.address.toLowerCase());
    assert.ok(attributed.spans.length > 0 && attributed.spans[0].rows.length > 0);
    assert.match(attributed.spans[0].text ?? FACTS[2][1], /\w/);
    const recordFile = path.join(work, 'record.json');
    fs.writeFileSync(recordFile, JSON.stringify(attributed));
    assert.match(await must(['attribute', 'verify', recordFile, '--model', 'job-1', '--response', FACTS[2][1], '--api', node.apiUrl]),
      /the record matches/);
    attributed.record.contributions[0].share_ppm = 999999;
    fs.writeFileSync(recordFile, JSON.stringify(attributed));
    const tampered = await run(['attribute', 'verify', recordFile, '--model', 'job-1', '--response', FACTS[2][1], '--api', node.apiUrl]);
    assert.equal(tampered.ok, false);
    assert.match(tampered.out, /does not match/);
    // The gradient path: the answer's loss gradient under the fine-tune against every
    // training row's stored sketch (DataInf).
    const byGradient = JSON.parse(await must(['attribute', '--model', 'job-1', '--method', 'gradient',
      '--prompt', FACTS[2][0], '--response', FACTS[2][1], '--api', node.apiUrl])
      .then((out) => out.slice(out.indexOf('{'), out.lastIndexOf('}') + 1)));
    assert.equal(byGradient.record.method, 'grad-datainf-v1');
    assert.deepEqual(byGradient.record.contributions.map(([, ppm]) => ppm), [1000000]);
    assert.ok(byGradient.top_rows.length > 0);
    const gradientFile = path.join(work, 'gradient-record.json');
    fs.writeFileSync(gradientFile, JSON.stringify(byGradient));
    assert.match(await must(['attribute', 'verify', gradientFile, '--model', 'job-1', '--prompt', FACTS[2][0],
      '--response', FACTS[2][1], '--api', node.apiUrl]), /the record matches/);
    byGradient.record.contributions[0][1] = 999999;
    fs.writeFileSync(gradientFile, JSON.stringify(byGradient));
    const forged = await run(['attribute', 'verify', gradientFile, '--model', 'job-1', '--prompt', FACTS[2][0],
      '--response', FACTS[2][1], '--api', node.apiUrl]);
    assert.equal(forged.ok, false);
    assert.match(forged.out, /does not match/);
    // The chat API attaches the record to an answer when asked (an OpenLedger extension).
    const withAttribution = await (await paidAsk(key, { attribution: true })).json();
    assert.equal(withAttribution.attribution.record.method, 'span-v1');
    assert.match(withAttribution.attribution.hash, /^0x[0-9a-f]{64}$/);
  });

  test('a job killed with the node resumes after the restart to the same adapter', async () => {
    const [owner, curator] = node.accounts;
    const at = await snapshotOf(owner, curator, 'atlas-two', false);
    // Reference: the same spec, uninterrupted.
    const reference = await must(trainArgs(owner.privateKey, at, 24));
    const refId = reference.match(/job (\d+) queued/)[1];
    const expected = (await api(`/v1/jobs/${refId}`)).result.adapter_hash;

    const queued = await must(trainArgs(owner.privateKey, at, 24, ['--detach']));
    const id = queued.match(/job (\d+) queued/)[1];
    await waitFor('a few steps', async () => ((await api(`/v1/jobs/${id}`)).progress?.step ?? 0) >= 9);
    await node.restart(); // SIGKILL mid-training, then start again on the same datadir
    const done = await waitFor('the resumed job', async () => {
      try {
        const j = await api(`/v1/jobs/${id}`);
        return ['completed', 'failed'].includes(j.status) && j;
      } catch { return false; }
    });
    assert.equal(done.status, 'completed', done.error);
    const history = await (await fetch(`${node.apiUrl}/v1/jobs/${id}/events`)).text();
    assert.match(history, /event: resumed/);
    assert.equal(done.result.adapter_hash, expected);
  });

  test('permissioned datanets need a grant; bad specs are refused up front', async () => {
    const [owner, curator, , stranger] = node.accounts;
    const at = await snapshotOf(owner, curator, 'closed-atlas', true);
    const refused = await run(trainArgs(stranger.privateKey, at, 2));
    assert.equal(refused.ok, false);
    assert.match(refused.out, /holds no unexpired grant/);
    const noBase = await run(trainArgs(owner.privateKey, at, 2, [], { base: 'gpt-17' }));
    assert.equal(noBase.ok, false);
    assert.match(noBase.out, /openledger model pull gpt-17/);
    const badRank = await run(trainArgs(owner.privateKey, at, 2, [], { rank: '0' }));
    assert.equal(badRank.ok, false);
    assert.match(badRank.out, /rank/);
    const wrongSnapshot = await run(trainArgs(owner.privateKey, '1@99', 2));
    assert.equal(wrongSnapshot.ok, false);
    assert.match(wrongSnapshot.out, /no published snapshot 99/);
  });
});
