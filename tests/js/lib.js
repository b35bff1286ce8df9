// Shared helpers for the end-to-end tests: raw JSON-RPC, Solidity compilation
// (solc-js, cached on disk), ethers/viem client construction.

import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { JsonRpcProvider, Network } from 'ethers';
import solc from 'solc';
import { CHAIN_ID } from './harness.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));

const execFileP = promisify(execFile);

export const GWEI = 1_000_000_000n;
export const ETHER = 10n ** 18n;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// raw JSON-RPC over HTTP (fetch)

let nextId = 1;

/** POSTs `body` verbatim (string) and returns { status, json, text }. */
export async function postRaw(url, body, headers = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body,
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

/** Sends one JSON-RPC request and returns the whole response object ({result} or {error}). */
export async function rpc(url, method, params = []) {
  const id = nextId++;
  const { json, text, status } = await postRaw(url, JSON.stringify({ jsonrpc: '2.0', id, method, params }));
  if (!json) throw new Error(`non-JSON response (HTTP ${status}) to ${method}: ${text}`);
  return json;
}

/** Like rpc() but returns `result` and throws on a JSON-RPC error. */
export async function rpcResult(url, method, params = []) {
  const res = await rpc(url, method, params);
  if (res.error) {
    const err = new Error(`${method} failed: ${JSON.stringify(res.error)}`);
    err.rpcError = res.error;
    throw err;
  }
  return res.result;
}

/** Polls eth_getTransactionReceipt until it is non-null. */
export async function waitReceipt(url, hash, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await rpcResult(url, 'eth_getTransactionReceipt', [hash]);
    if (r) return r;
    if (Date.now() > deadline) throw new Error(`no receipt for ${hash} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

// ---------------------------------------------------------------------------
// ethers

/**
 * ethers v6 provider with a fixed network and fast polling (instant-mining chains).
 * cacheTimeout: -1 turns off ethers' 250 ms de-duplication of identical requests,
 * which otherwise returns stale balances/nonces right after an instantly mined tx.
 * JSON-RPC batching stays at ethers' defaults (requests are sent as JSON arrays).
 */
export function ethersProvider(rpcUrl) {
  const network = new Network('openledger', CHAIN_ID);
  const provider = new JsonRpcProvider(rpcUrl, network, { staticNetwork: network, pollingInterval: 100, cacheTimeout: -1 });
  return provider;
}

// ---------------------------------------------------------------------------
// Solidity

export const SOLC_SETTINGS = Object.freeze({
  evmVersion: 'prague',
  optimizer: { enabled: true, runs: 200 },
});

/**
 * Compiles contracts/<file> with solc-js and returns { [contractName]: { abi, bytecode, deployedBytecode } }.
 * Results are cached in the OS temp dir keyed by source + compiler version + settings.
 */
export function compileContract(file = 'OpenToken.sol') {
  const source = fs.readFileSync(path.join(HERE, 'contracts', file), 'utf8');
  const version = solc.version();
  const key = crypto
    .createHash('sha256')
    .update(JSON.stringify({ file, source, version, SOLC_SETTINGS }))
    .digest('hex')
    .slice(0, 16);
  const cacheFile = path.join(os.tmpdir(), `openledger-e2e-solc-${key}.json`);
  if (fs.existsSync(cacheFile)) {
    try {
      return JSON.parse(fs.readFileSync(cacheFile, 'utf8'));
    } catch {
      // corrupt cache: recompile
    }
  }
  const input = {
    language: 'Solidity',
    sources: { [file]: { content: source } },
    settings: {
      ...SOLC_SETTINGS,
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  if (errors.length) throw new Error(`solc failed:\n${errors.map((e) => e.formattedMessage).join('\n')}`);
  const result = {};
  for (const [name, c] of Object.entries(output.contracts[file])) {
    result[name] = {
      abi: c.abi,
      bytecode: `0x${c.evm.bytecode.object}`,
      deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
    };
  }
  const tmp = `${cacheFile}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(result));
  fs.renameSync(tmp, cacheFile);
  return result;
}

export function openToken() {
  return compileContract('OpenToken.sol').OpenToken;
}

/** Asserts a JSON-RPC error object; returns it. */
export function expectRpcError(res, what) {
  if (!res || !res.error) {
    throw new Error(`${what}: expected a JSON-RPC error, got ${JSON.stringify(res)}`);
  }
  if (typeof res.error.code !== 'number' || typeof res.error.message !== 'string') {
    throw new Error(`${what}: malformed error object ${JSON.stringify(res.error)}`);
  }
  return res.error;
}

/**
 * `cast <subcommand> --rpc-url <node> ...args`, returning trimmed stdout; the foundry
 * nightly warning and colours are switched off so output can be matched.
 */
export function castAgainst(node, castBin) {
  return async (...args) => {
    const { stdout } = await execFileP(castBin, [args[0], '--rpc-url', node.rpcUrl, ...args.slice(1)], {
      timeout: 60_000,
      env: { ...process.env, FOUNDRY_DISABLE_NIGHTLY_WARNING: '1', NO_COLOR: '1' },
    });
    return stdout.trim();
  };
}
