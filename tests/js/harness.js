// Test harness: starts a chain node (anvil or openledger) on a free loopback
// port and hands back connection details plus the 10 well-known dev accounts.
//
//   NODE_UNDER_TEST = anvil | openledger   (default: openledger)
//   OPENLEDGER_BIN  = path to the openledger binary
//                     (default: $CARGO_TARGET_DIR/debug/openledger, else
//                      <repo>/target/debug/openledger)
//   ANVIL_BIN       = path to anvil (default: the binary shipped by the
//                     @foundry-rs/anvil-<platform> npm package)
//   RPC_METHOD_LOG  = file; when set, clients talk to the node through a
//                     recording proxy (rpc-recorder.js) that appends one JSON
//                     line per JSON-RPC call (HTTP and WebSocket) to the file.
//                     Summarise with: node tests/js/rpc-summary.js <file>
//   RPC_BLOCK_METHODS = comma-separated methods the proxy answers with -32601
//                     instead of forwarding (simulate a node lacking them).
//   HARNESS_VERBOSE = 1 to echo the node's stdout/stderr live.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { HDNodeWallet, Mnemonic } from 'ethers';
import { startRecorder } from './rpc-recorder.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '..', '..');
const require = createRequire(import.meta.url);

export const MNEMONIC = 'test test test test test test test test test test test junk';
export const CHAIN_ID = 1612;
export const ACCOUNT_COUNT = 10;
export const NODE_UNDER_TEST = (process.env.NODE_UNDER_TEST || 'openledger').toLowerCase();
export const IS_ANVIL = NODE_UNDER_TEST === 'anvil';

if (!['anvil', 'openledger'].includes(NODE_UNDER_TEST)) {
  throw new Error(`NODE_UNDER_TEST must be "anvil" or "openledger", got "${NODE_UNDER_TEST}"`);
}

const READY_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 5_000;

// ---------------------------------------------------------------------------
// accounts

let cachedAccounts;
/** The 10 dev accounts derived from MNEMONIC at m/44'/60'/0'/0/i. */
export function devAccounts() {
  if (!cachedAccounts) {
    const seed = Mnemonic.fromPhrase(MNEMONIC).computeSeed();
    const root = HDNodeWallet.fromSeed(seed);
    cachedAccounts = [];
    for (let i = 0; i < ACCOUNT_COUNT; i++) {
      const w = root.derivePath(`m/44'/60'/0'/0/${i}`);
      cachedAccounts.push(Object.freeze({ address: w.address, privateKey: w.privateKey }));
    }
    Object.freeze(cachedAccounts);
  }
  return cachedAccounts;
}

// ---------------------------------------------------------------------------
// binaries

function platformPackageSuffix() {
  const arch = { x64: 'amd64', arm64: 'arm64' }[process.arch];
  if (!arch) throw new Error(`unsupported arch ${process.arch}`);
  return `${process.platform}-${arch}`;
}

/** Path of a foundry binary (anvil/cast) shipped through npm. */
export function foundryBin(tool) {
  const envName = `${tool.toUpperCase()}_BIN`;
  if (process.env[envName]) return process.env[envName];
  const exe = process.platform === 'win32' ? `${tool}.exe` : tool;
  try {
    const p = require.resolve(`@foundry-rs/${tool}-${platformPackageSuffix()}/bin/${exe}`);
    if (fs.existsSync(p)) return p;
  } catch {
    // fall through
  }
  const fallback = path.join(HERE, 'node_modules', '.bin', tool);
  if (fs.existsSync(fallback)) return fallback;
  throw new Error(`cannot find the ${tool} binary; run npm ci in tests/js or set ${envName}`);
}

export function openledgerBin() {
  if (process.env.OPENLEDGER_BIN) return path.resolve(REPO_ROOT, process.env.OPENLEDGER_BIN);
  const targetDir = process.env.CARGO_TARGET_DIR
    ? path.resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR)
    : path.join(REPO_ROOT, 'target');
  return path.join(targetDir, 'debug', 'openledger');
}

// ---------------------------------------------------------------------------
// helpers

/** Asks the OS for a free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function chainIdAnswers(rpcUrl) {
  try {
    const res = await fetch(rpcUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }),
      signal: AbortSignal.timeout(2_000),
    });
    if (!res.ok) return false;
    const body = await res.json();
    return typeof body?.result === 'string';
  } catch {
    return false;
  }
}

// Every live child, so a crashing test process does not leak nodes.
const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

// ---------------------------------------------------------------------------
// node handle

class NodeHandle {
  constructor({ backend, port, datadir, bin, args, label }) {
    this.backend = backend;
    this.port = port;
    this.datadir = datadir;
    this.bin = bin;
    this.args = args;
    this.label = label || backend;
    // the node itself; rpcUrl/wsUrl may point at the recording proxy instead
    this.directRpcUrl = `http://127.0.0.1:${port}`;
    this.rpcUrl = this.directRpcUrl;
    this.wsUrl = `ws://127.0.0.1:${port}`;
    this.recorder = null;
    this.accounts = devAccounts();
    this.output = '';
    this.child = null;
    this.stopped = false;
  }

  /** stdout+stderr captured from the current and previous runs. */
  logs() {
    return this.output;
  }

  _spawn() {
    const child = spawn(this.bin, this.args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_BACKTRACE: process.env.RUST_BACKTRACE || '1' },
    });
    this.child = child;
    live.add(child);
    child.exitInfo = null;
    child.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        child.exitInfo = { code, signal };
        live.delete(child);
        resolve(child.exitInfo);
      });
      child.on('error', (err) => {
        child.exitInfo = { error: err };
        live.delete(child);
        resolve(child.exitInfo);
      });
    });
    const onData = (stream) => (buf) => {
      const text = buf.toString();
      this.output += text;
      if (this.output.length > 2_000_000) this.output = this.output.slice(-1_000_000);
      if (process.env.HARNESS_VERBOSE) process.stderr.write(`[${this.label}:${stream}] ${text}`);
    };
    child.stdout.on('data', onData('stdout'));
    child.stderr.on('data', onData('stderr'));
    return child;
  }

  async _waitReady() {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    const child = this.child;
    while (Date.now() < deadline) {
      if (child.exitInfo) {
        throw new Error(
          `${this.label} exited during startup (${JSON.stringify(child.exitInfo)})\n` +
            `command: ${this.bin} ${this.args.join(' ')}\n--- output ---\n${this.output}`,
        );
      }
      if (await chainIdAnswers(this.directRpcUrl)) return;
      await sleep(100);
    }
    await this._kill('SIGKILL');
    throw new Error(
      `${this.label} did not answer eth_chainId on ${this.directRpcUrl} within ${READY_TIMEOUT_MS / 1000}s\n` +
        `command: ${this.bin} ${this.args.join(' ')}\n--- output ---\n${this.output}`,
    );
  }

  async _kill(signal) {
    const child = this.child;
    if (!child || child.exitInfo) return;
    child.kill(signal);
    if (signal === 'SIGKILL') {
      await child.exited;
      return;
    }
    const timer = sleep(STOP_GRACE_MS).then(() => 'timeout');
    if ((await Promise.race([child.exited, timer])) === 'timeout') {
      child.kill('SIGKILL');
      await child.exited;
    }
  }

  async start() {
    this._spawn();
    await this._waitReady();
    if (process.env.RPC_METHOD_LOG || process.env.RPC_BLOCK_METHODS) {
      const listenPort = await freePort();
      this.recorder = await startRecorder({
        listenPort,
        upstreamPort: this.port,
        logFile: process.env.RPC_METHOD_LOG ? path.resolve(process.env.RPC_METHOD_LOG) : null,
        blockedMethods: (process.env.RPC_BLOCK_METHODS || '').split(',').map((m) => m.trim()).filter(Boolean),
      });
      this.rpcUrl = `http://127.0.0.1:${listenPort}`;
      this.wsUrl = `ws://127.0.0.1:${listenPort}`;
    }
    return this;
  }

  /** Graceful stop: SIGTERM, then SIGKILL after a grace period; removes the datadir. */
  async stop() {
    if (this.stopped) return;
    this.stopped = true;
    await this.recorder?.close();
    await this._kill('SIGTERM');
    if (this.datadir) fs.rmSync(this.datadir, { recursive: true, force: true });
  }

  /**
   * Crash + restart (openledger only): SIGKILL the process and start the same
   * binary on the same datadir and port, waiting until it answers again.
   */
  async restart() {
    if (this.backend !== 'openledger') {
      throw new Error('restart() is only supported for openledger (anvil keeps state in memory)');
    }
    if (this.stopped) throw new Error('node already stopped');
    await this._kill('SIGKILL');
    this.output += `\n===== harness: SIGKILL + restart on ${this.datadir} =====\n`;
    this._spawn();
    await this._waitReady();
    return this;
  }
}

/**
 * Starts a node and waits until it serves eth_chainId.
 * @param {{backend?: 'anvil'|'openledger', label?: string, args?: string[]}} [opts]
 *   args: extra `openledger up` arguments (e.g. `--param NAME=VALUE`); OpenLedger only.
 * @returns {Promise<NodeHandle>} { rpcUrl, wsUrl, accounts, stop(), restart(), logs() }
 */
export async function startNode(opts = {}) {
  const backend = opts.backend || NODE_UNDER_TEST;
  const port = await freePort();
  let handle;
  if (backend === 'anvil') {
    handle = new NodeHandle({
      backend,
      port,
      datadir: null,
      bin: foundryBin('anvil'),
      label: opts.label,
      args: [
        '--host', '127.0.0.1',
        '--port', String(port),
        '--chain-id', String(CHAIN_ID),
        // anvil 1.7.1 defaults to the newest fork ("Bpo1", i.e. Osaka+BPO1);
        // pin the rules OpenLedger implements.
        '--hardfork', 'prague',
        '--mnemonic', MNEMONIC,
        '--accounts', String(ACCOUNT_COUNT),
        '--balance', '10000',
        // These equal anvil's defaults; spelled out because OpenLedger has
        // the same genesis parameters and the differential test relies on it.
        '--block-base-fee-per-gas', '1000000000',
        '--gas-limit', '30000000',
      ],
    });
  } else if (backend === 'openledger') {
    const bin = openledgerBin();
    if (!fs.existsSync(bin)) {
      throw new Error(`openledger binary not found at ${bin} (build it with cargo build, or set OPENLEDGER_BIN)`);
    }
    const datadir = fs.mkdtempSync(path.join(os.tmpdir(), 'openledger-e2e-'));
    const apiPort = await freePort();
    handle = new NodeHandle({
      backend,
      port,
      datadir,
      bin,
      label: opts.label,
      args: ['up', '--datadir', datadir, '--port', String(port), '--chain-id', String(CHAIN_ID),
        '--api-port', String(apiPort),
        // No base model unless the test names one (`--model NAME` in opts.args).
        ...((opts.args || []).includes('--model') ? [] : ['--model', 'none']), ...(opts.args || [])],
    });
    // The data service API (datanet uploads, snapshots, exports).
    handle.apiUrl = `http://127.0.0.1:${apiPort}`;
  } else {
    throw new Error(`unknown backend ${backend}`);
  }
  try {
    return await handle.start();
  } catch (err) {
    if (handle.datadir) fs.rmSync(handle.datadir, { recursive: true, force: true });
    throw err;
  }
}

/** Crash-restart helper: SIGKILL the node and start it again on the same datadir + port. */
export async function restart(handle) {
  return handle.restart();
}
