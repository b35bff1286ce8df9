// The `openledger` command line itself (wallet and verify-proof) against a
// running node, plus keystore interoperability with foundry's `cast wallet`.
// openledger only: the whole file is skipped when NODE_UNDER_TEST=anvil.
//
// Every CLI call gets its own HOME and no OPENLEDGER_KEYSTORE, and always an
// explicit --keystore, so nothing touches the developer's ~/.openledger.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Wallet, getAddress, id as keccakId, toBeHex } from 'ethers';
import { IS_ANVIL, foundryBin, openledgerBin, startNode } from './harness.js';
import { ETHER, ethersProvider, rpcResult } from './lib.js';

const CLI_TIMEOUT_MS = 60_000;
const TEST_TIMEOUT_MS = 180_000;
const PROTOCOL_PARAMS = '0x0000000000000000000000000000000000000f01';
const GAS_LIMIT = 30_000_000n;
const DEV1_KEY = '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d';
const DEV1_ADDRESS = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';

const SKIP = IS_ANVIL ? 'tests the openledger CLI against an openledger node' : false;

let workDir; // per-run scratch dir: HOME, keystores, password files
let rpcUrl;

/**
 * Runs a binary with stdin closed and a hard timeout.
 * Resolves { code, signal, stdout, stderr, out } (out = stdout + stderr); never rejects on exit status.
 */
function exec(bin, args, { timeoutMs = CLI_TIMEOUT_MS, env = {} } = {}) {
  return new Promise((resolve, reject) => {
    const childEnv = { ...process.env, HOME: path.join(workDir, 'home'), NO_COLOR: '1', ...env };
    delete childEnv.OPENLEDGER_KEYSTORE;
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (b) => { stdout += b; });
    child.stderr.on('data', (b) => { stderr += b; });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const r = { code, signal, stdout: stdout.trim(), stderr: stderr.trim(), out: `${stdout}\n${stderr}`.trim() };
      if (timedOut) {
        reject(new Error(`${path.basename(bin)} ${args.join(' ')} timed out after ${timeoutMs} ms\n${r.out}`));
      } else {
        resolve(r);
      }
    });
  });
}

function describeRun(bin, args, r) {
  return `${path.basename(bin)} ${args.join(' ')} -> exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\n` +
    `stdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/** Runs `openledger ARGS`, asserting exit status 0. */
async function ol(args) {
  const r = await exec(openledgerBin(), args);
  assert.equal(r.code, 0, describeRun(openledgerBin(), args, r));
  return r;
}

/** Runs `openledger ARGS`, asserting a non-zero exit (not a crash by signal). */
async function olFails(args) {
  const r = await exec(openledgerBin(), args);
  assert.ok(r.code !== 0 && r.code !== null, `expected failure: ${describeRun(openledgerBin(), args, r)}`);
  return r;
}

/** Runs `cast ARGS`, asserting exit status 0. */
async function cast(args) {
  const bin = foundryBin('cast');
  const r = await exec(bin, args, { env: { FOUNDRY_DISABLE_NIGHTLY_WARNING: '1' } });
  assert.equal(r.code, 0, describeRun(bin, args, r));
  return r;
}

/** Writes a scratch file (mode 0600) and returns its path. */
function scratchFile(name, contents) {
  const file = path.join(workDir, name);
  fs.writeFileSync(file, contents, { mode: 0o600 });
  return file;
}

/** A fresh keystore directory. */
function freshKeystore(name) {
  const dir = path.join(workDir, name);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

const sameAddress = (a, b) => getAddress(a) === getAddress(b);
const firstTxHash = (text) => text.match(/0x[0-9a-fA-F]{64}/)?.[0];
const freshAddress = () => Wallet.createRandom().address;

describe('openledger CLI', { skip: SKIP }, () => {
  let node;
  let provider;

  before(async () => {
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'openledger-cli-'));
    fs.mkdirSync(path.join(workDir, 'home'));
    node = await startNode();
    rpcUrl = node.rpcUrl;
    provider = ethersProvider(rpcUrl);
  });
  after(async () => {
    provider?.destroy();
    await node?.stop();
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  test('wallet import of a dev key, then list, balance and send 1.5 OPEN move exactly 1.5e18 wei', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ks = freshKeystore('ks-import');
    const keyFile = scratchFile('dev1.key', `${DEV1_KEY}\n`);
    const pwFile = scratchFile('dev1.pw', 'import-pass\n');
    assert.ok(sameAddress(new Wallet(DEV1_KEY).address, DEV1_ADDRESS));

    const imported = await ol(['wallet', 'import', 'dev1', '--private-key-file', keyFile, '--keystore', ks, '--password-file', pwFile]);
    assert.match(imported.stdout, new RegExp(DEV1_ADDRESS, 'i'));

    const listed = await ol(['wallet', 'list', '--keystore', ks]);
    const line = listed.stdout.split('\n').find((l) => l.trim().split(/\s+/)[0] === 'dev1');
    assert.ok(line, `wallet list does not show dev1:\n${listed.stdout}`);
    const addr = line.match(/0x[0-9a-fA-F]{40}/)?.[0];
    assert.ok(addr && sameAddress(addr, DEV1_ADDRESS), `wallet list line: ${line}`);

    const bal = await ol(['wallet', 'balance', 'dev1', '--rpc', rpcUrl, '--keystore', ks]);
    assert.equal(bal.stdout, '10000 OPEN');

    const to = freshAddress();
    const before = await provider.getBalance(to);
    const sent = await ol([
      'wallet', 'send', '--from', 'dev1', '--to', to, '--value', '1.5',
      '--rpc', rpcUrl, '--keystore', ks, '--password-file', pwFile,
    ]);
    const hash = firstTxHash(sent.stdout);
    assert.ok(hash, `no transaction hash in: ${sent.stdout}`);
    const receipt = await rpcResult(rpcUrl, 'eth_getTransactionReceipt', [hash]);
    assert.equal(receipt?.status, '0x1');
    assert.ok(sameAddress(receipt.from, DEV1_ADDRESS));
    assert.equal((await provider.getBalance(to)) - before, 15n * ETHER / 10n);
  });

  test('wallet new writes a standard keystore v3 file that cast wallet address can decrypt', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ks = freshKeystore('ks-new');
    const password = 'new-wallet-pass';
    const pwFile = scratchFile('new.pw', `${password}\n`);
    const created = await ol(['wallet', 'new', 'fresh', '--keystore', ks, '--password-file', pwFile]);
    const printed = created.stdout.match(/0x[0-9a-fA-F]{40}/)?.[0];
    assert.ok(printed, `no address in: ${created.stdout}`);

    const file = path.join(ks, 'fresh');
    assert.ok(fs.existsSync(file), `expected keystore file ${file}; directory has ${fs.readdirSync(ks)}`);
    const json = JSON.parse(fs.readFileSync(file, 'utf8'));
    assert.equal(json.version, 3);
    assert.ok(json.crypto?.ciphertext && json.crypto?.kdf && json.crypto?.mac, 'keystore v3 crypto section');

    const { stdout } = await cast(['wallet', 'address', '--keystore', file, '--password', password]);
    assert.ok(sameAddress(stdout, printed), `cast says ${stdout}, openledger said ${printed}`);
  });

  describe('a foundry keystore (cast wallet new) imported with wallet import --file', () => {
    const password = 'foundry-pass';
    let ks;
    let address;
    let rightPw;

    before(async () => {
      const foundryDir = freshKeystore('foundry-ks');
      const made = await cast(['wallet', 'new', foundryDir, 'castkey', '--unsafe-password', password]);
      address = made.stdout.match(/Address:\s*(0x[0-9a-fA-F]{40})/)?.[1];
      assert.ok(address, `no address in cast output: ${made.stdout}`);

      ks = freshKeystore('ks-foundry');
      await ol(['wallet', 'import', 'castkey', '--file', path.join(foundryDir, 'castkey'), '--keystore', ks]);
      rightPw = scratchFile('foundry.pw', `${password}\n`);

      // fund it from dev account #2
      const funder = new Wallet(node.accounts[2].privateKey, provider);
      const tx = await funder.sendTransaction({ to: address, value: 2n * ETHER });
      const rc = await tx.wait(1, 60_000);
      assert.equal(rc.status, 1);
    });

    test('wallet send --from the imported account with the right password transfers OPEN', { timeout: TEST_TIMEOUT_MS }, async () => {
      const to = freshAddress();
      const nonce = await provider.getTransactionCount(address);
      await ol([
        'wallet', 'send', '--from', 'castkey', '--to', to, '--value', '0.25',
        '--rpc', rpcUrl, '--keystore', ks, '--password-file', rightPw,
      ]);
      assert.equal(await provider.getBalance(to), ETHER / 4n);
      assert.equal(await provider.getTransactionCount(address), nonce + 1);
    });

    test('wallet send with a wrong password exits non-zero, mentions the password and sends nothing', { timeout: TEST_TIMEOUT_MS }, async () => {
      const to = freshAddress();
      const nonce = await provider.getTransactionCount(address);
      const wrongPw = scratchFile('wrong.pw', 'not-the-password\n');
      const r = await olFails([
        'wallet', 'send', '--from', 'castkey', '--to', to, '--value', '0.25',
        '--rpc', rpcUrl, '--keystore', ks, '--password-file', wrongPw,
      ]);
      assert.match(r.stderr, /password/i);
      assert.equal(await provider.getTransactionCount(address), nonce);
      assert.equal(await provider.getBalance(to), 0n);
    });
  });

  test('wallet send rejects malformed amounts ("1.2.3", "-1") with a clear message and sends nothing', { timeout: TEST_TIMEOUT_MS }, async () => {
    const ks = freshKeystore('ks-amounts');
    const dev = node.accounts[4];
    const keyFile = scratchFile('dev4.key', `${dev.privateKey}\n`);
    const pwFile = scratchFile('dev4.pw', 'amount-pass\n');
    await ol(['wallet', 'import', 'dev4', '--private-key-file', keyFile, '--keystore', ks, '--password-file', pwFile]);

    const to = freshAddress();
    const nonce = await provider.getTransactionCount(dev.address);
    const common = ['--from', 'dev4', '--to', to, '--rpc', rpcUrl, '--keystore', ks, '--password-file', pwFile];
    const cases = [
      { value: ['--value', '1.2.3'], message: /1\.2\.3.*not a decimal number/i },
      { value: ['--value=-1'], message: /-1.*negative/i },
      // the usual spelling: clap itself refuses it before the CLI sees an amount
      { value: ['--value', '-1'], message: /-1/ },
    ];
    for (const c of cases) {
      const r = await olFails(['wallet', 'send', ...common, ...c.value]);
      assert.match(r.stderr, c.message, `${c.value.join(' ')}: ${r.stderr}`);
    }
    assert.equal(await provider.getTransactionCount(dev.address), nonce);
    assert.equal(await provider.getBalance(to), 0n);
  });

  test('verify-proof of a dev account exits 0 and reports a valid proof', { timeout: TEST_TIMEOUT_MS }, async () => {
    const addr = node.accounts[5].address;
    const r = await ol(['verify-proof', '--rpc', rpcUrl, '--address', addr]);
    assert.match(r.stdout, /proof valid/i);
    assert.match(r.stdout, new RegExp(addr, 'i'));
  });

  test('verify-proof --slot proves the ProtocolParams block.gas_limit slot holds 30000000', { timeout: TEST_TIMEOUT_MS }, async () => {
    const slot = keccakId('block.gas_limit'); // keccak256 of the key, used as the uint slot number
    const r = await ol(['verify-proof', '--rpc', rpcUrl, '--address', PROTOCOL_PARAMS, '--slot', slot]);
    assert.match(r.stdout, /proof valid/i);
    const line = r.stdout.split('\n').find((l) => /\bslot\b/.test(l));
    const m = line?.match(/slot\s+(0x[0-9a-fA-F]+)\s*=\s*(0x[0-9a-fA-F]+)/);
    assert.ok(m, `no slot line in:\n${r.stdout}`);
    assert.equal(BigInt(m[1]), BigInt(slot));
    assert.equal(BigInt(m[2]), GAS_LIMIT);
    // the same value through plain JSON-RPC
    const viaRpc = await rpcResult(rpcUrl, 'eth_getStorageAt', [PROTOCOL_PARAMS, slot, 'latest']);
    assert.equal(BigInt(viaRpc), GAS_LIMIT);
  });

  test('verify-proof against a wrong --state-root exits non-zero and says the proof is invalid', { timeout: TEST_TIMEOUT_MS }, async () => {
    const r = await olFails([
      'verify-proof', '--rpc', rpcUrl, '--address', node.accounts[5].address, '--state-root', `0x${'1'.repeat(64)}`,
    ]);
    assert.match(r.stderr, /invalid/i);
    assert.doesNotMatch(r.stdout, /proof valid/i);
  });

  test('openledger_getProof returns the block header stateRoot and a hex accountProof', { timeout: TEST_TIMEOUT_MS }, async () => {
    const addr = node.accounts[6].address;
    const head = BigInt(await rpcResult(rpcUrl, 'eth_blockNumber'));
    for (const tag of ['latest', toBeHex(head)]) {
      const proof = await rpcResult(rpcUrl, 'openledger_getProof', [addr, [], tag]);
      assert.ok(proof && typeof proof === 'object', `${tag}: ${JSON.stringify(proof)}`);
      // blockNumber is a JSON number today; accept a hex quantity too
      const number = BigInt(proof.blockNumber);
      assert.equal(number, head, `${tag}: proof for block ${number}, head is ${head}`);
      const block = await rpcResult(rpcUrl, 'eth_getBlockByNumber', [toBeHex(number), false]);
      assert.match(proof.stateRoot, /^0x[0-9a-f]{64}$/i);
      assert.equal(proof.stateRoot.toLowerCase(), block.stateRoot.toLowerCase(), tag);
      assert.equal(typeof proof.accountProof, 'string');
      assert.match(proof.accountProof, /^0x([0-9a-fA-F]{2})+$/, 'accountProof is non-empty hex');
    }
  });
});
