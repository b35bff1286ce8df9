// Foundry's `cast` CLI against the node under test.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { AbiCoder } from 'ethers';
import { foundryBin, startNode, CHAIN_ID } from './harness.js';
import { ETHER, GWEI, openToken, rpcResult } from './lib.js';

const execFileP = promisify(execFile);
const CAST = foundryBin('cast');

let node;
let rpcUrl;

/** Runs cast with --rpc-url appended; resolves { stdout, stderr } (trimmed) or rejects with output attached. */
async function cast(args, { rpc = true } = {}) {
  // options go before positional arguments: `cast send --create CODE SIG ARGS...` is variadic
  const full = rpc ? [args[0], '--rpc-url', rpcUrl, ...args.slice(1)] : args;
  try {
    const { stdout, stderr } = await execFileP(CAST, full, {
      timeout: 60_000,
      env: { ...process.env, FOUNDRY_DISABLE_NIGHTLY_WARNING: '1', NO_COLOR: '1' },
      maxBuffer: 16 * 1024 * 1024,
    });
    return { stdout: stdout.trim(), stderr: stderr.trim() };
  } catch (err) {
    const shown = full.map((a) => (a.length > 80 ? `${a.slice(0, 40)}...(${a.length} chars)` : a)).join(' ');
    err.message = `cast ${shown} failed: ${err.message}\nstdout: ${err.stdout}\nstderr: ${err.stderr}`;
    throw err;
  }
}

/** Runs cast expecting failure; returns combined output. */
async function castFails(args) {
  try {
    const r = await cast(args);
    assert.fail(`expected cast ${args.join(' ')} to fail, got: ${r.stdout}`);
  } catch (err) {
    if (err.code === 'ERR_ASSERTION') throw err;
    return `${err.stdout || ''}\n${err.stderr || ''}`;
  }
}

describe('cast', () => {
  let acct; // sender accounts
  before(async () => {
    node = await startNode();
    rpcUrl = node.rpcUrl;
    acct = node.accounts;
  });
  after(async () => {
    await node?.stop();
  });

  test('cast chain-id', async () => {
    const { stdout } = await cast(['chain-id']);
    assert.equal(stdout, String(CHAIN_ID));
  });

  test('cast block-number', async () => {
    const { stdout } = await cast(['block-number']);
    assert.match(stdout, /^\d+$/);
    const viaRpc = BigInt(await rpcResult(rpcUrl, 'eth_blockNumber'));
    assert.ok(BigInt(stdout) <= viaRpc, `cast block-number ${stdout} > eth_blockNumber ${viaRpc}`);
  });

  test('cast balance of a prefunded, untouched dev account is 10000 OPEN', async () => {
    const { stdout } = await cast(['balance', acct[9].address]);
    assert.equal(stdout, (10_000n * ETHER).toString());
    const { stdout: inEther } = await cast(['balance', acct[9].address, '--ether']);
    assert.equal(Number(inEther), 10000);
  });

  test('cast send --value transfers OPEN; cast receipt, cast nonce, cast tx agree', async () => {
    const from = acct[1];
    const to = '0x00000000000000000000000000000000000C0FFE';
    const nonceBefore = BigInt((await cast(['nonce', from.address])).stdout);
    const balBefore = BigInt((await cast(['balance', from.address])).stdout);

    const { stdout } = await cast(['send', '--private-key', from.privateKey, '--value', '1ether', to, '--json']);
    const receipt = JSON.parse(stdout);
    assert.equal(receipt.status, '0x1');
    assert.equal(receipt.to.toLowerCase(), to.toLowerCase());
    assert.equal(receipt.from.toLowerCase(), from.address.toLowerCase());
    assert.equal(BigInt(receipt.gasUsed), 21000n);

    assert.equal((await cast(['balance', to])).stdout, ETHER.toString());
    const cost = BigInt(receipt.gasUsed) * BigInt(receipt.effectiveGasPrice);
    const balAfter = BigInt((await cast(['balance', from.address])).stdout);
    assert.equal(balAfter, balBefore - ETHER - cost);

    assert.equal(BigInt((await cast(['nonce', from.address])).stdout), nonceBefore + 1n);

    const rc = JSON.parse((await cast(['receipt', receipt.transactionHash, '--json'])).stdout);
    assert.equal(rc.transactionHash, receipt.transactionHash);
    assert.equal(rc.blockHash, receipt.blockHash);
    assert.equal(rc.status, '0x1');
    assert.equal(rc.type, '0x2');
    const statusField = (await cast(['receipt', receipt.transactionHash, 'status'])).stdout;
    assert.match(statusField, /^(1|true)\b/);

    const tx = JSON.parse((await cast(['tx', receipt.transactionHash, '--json'])).stdout);
    assert.equal(tx.hash, receipt.transactionHash);
    assert.equal(BigInt(tx.value), ETHER);
    assert.equal(BigInt(tx.chainId), BigInt(CHAIN_ID));
    assert.equal(BigInt(tx.nonce), nonceBefore);
  });

  test('cast send --legacy sends a type-0 (EIP-155) transaction', async () => {
    const from = acct[2];
    const to = acct[8].address;
    const balTo = BigInt((await cast(['balance', to])).stdout);
    const { stdout } = await cast([
      'send', '--legacy', '--gas-price', '3gwei', '--private-key', from.privateKey, '--value', '12345', to, '--json',
    ]);
    const receipt = JSON.parse(stdout);
    assert.equal(receipt.status, '0x1');
    assert.equal(receipt.type, '0x0');
    assert.equal(BigInt(receipt.effectiveGasPrice), 3n * GWEI);
    const tx = JSON.parse((await cast(['tx', receipt.transactionHash, '--json'])).stdout);
    assert.equal(tx.type, '0x0');
    assert.equal(BigInt(tx.gasPrice), 3n * GWEI);
    assert.equal(BigInt(tx.chainId), BigInt(CHAIN_ID), 'legacy tx must be EIP-155 protected');
    assert.equal(BigInt((await cast(['balance', to])).stdout), balTo + 12345n);
  });

  describe('contract deployed with cast send --create', () => {
    let token;
    let deployer;
    before(async () => {
      deployer = acct[3];
      const { bytecode } = openToken();
      const { stdout } = await cast([
        'send', '--private-key', deployer.privateKey, '--create', bytecode, 'constructor(uint256)', '1000000', '--json',
      ]);
      const receipt = JSON.parse(stdout);
      assert.equal(receipt.status, '0x1');
      assert.match(receipt.contractAddress, /^0x[0-9a-fA-F]{40}$/);
      token = receipt.contractAddress;
    });

    test('cast code returns the runtime bytecode', async () => {
      const { stdout } = await cast(['code', token]);
      assert.equal(stdout.toLowerCase(), openToken().deployedBytecode.toLowerCase());
    });

    test('cast call reads view functions', async () => {
      assert.equal((await cast(['call', token, 'totalSupply()(uint256)'])).stdout.split(' ')[0], '1000000');
      assert.equal((await cast(['call', token, 'name()(string)'])).stdout, '"Open Test Token"');
      assert.equal((await cast(['call', token, 'decimals()(uint8)'])).stdout, '18');
      assert.equal(
        (await cast(['call', token, 'balanceOf(address)(uint256)', deployer.address])).stdout.split(' ')[0],
        '1000000',
      );
      assert.equal((await cast(['call', token, 'owner()(address)'])).stdout.toLowerCase(), deployer.address.toLowerCase());
    });

    test('cast send to a contract function, then cast call and cast storage see the new state', async () => {
      const { stdout } = await cast([
        'send', '--private-key', deployer.privateKey, token, 'increment(bytes32)',
        '0x6361737400000000000000000000000000000000000000000000000000000000', '--json',
      ]);
      const receipt = JSON.parse(stdout);
      assert.equal(receipt.status, '0x1');
      assert.equal(receipt.logs.length, 1);
      const counter = (await cast(['call', token, 'counter()(uint256)'])).stdout;
      assert.equal(counter, '1');
      // slot 3 is `counter`
      const slot = (await cast(['storage', token, '3'])).stdout;
      assert.equal(BigInt(slot), 1n);
    });

    test('cast send transfer emits a Transfer log with the right topics', async () => {
      const to = acct[7].address;
      const { stdout } = await cast([
        'send', '--private-key', deployer.privateKey, token, 'transfer(address,uint256)', to, '250', '--json',
      ]);
      const receipt = JSON.parse(stdout);
      assert.equal(receipt.status, '0x1');
      assert.equal(receipt.logs.length, 1);
      const log = receipt.logs[0];
      assert.equal(log.address.toLowerCase(), token.toLowerCase());
      assert.equal(log.topics[0], (await cast(['keccak', 'Transfer(address,address,uint256)'], { rpc: false })).stdout);
      assert.equal(BigInt(log.topics[2]), BigInt(to));
      assert.equal(BigInt(log.data), 250n);
      assert.equal(
        (await cast(['call', token, 'balanceOf(address)(uint256)', to])).stdout.split(' ')[0],
        '250',
      );
    });

    test('cast call of a reverting function reports the revert reason', async () => {
      const out = await castFails(['call', token, 'fail()']);
      assert.match(out, /OpenToken: deliberate failure/);
    });

    test('cast call with explicit ABI-encoded calldata', async () => {
      const data = `0x70a08231${AbiCoder.defaultAbiCoder().encode(['address'], [deployer.address]).slice(2)}`;
      const { stdout } = await cast(['call', token, data]);
      assert.ok(BigInt(stdout) > 0n);
    });
  });

  test('cast block latest shows baseFeePerGas and cast gas-price answers', async () => {
    const blk = JSON.parse((await cast(['block', 'latest', '--json'])).stdout);
    assert.ok(blk.baseFeePerGas !== undefined, 'block must carry baseFeePerGas (London+)');
    assert.equal(BigInt(blk.gasLimit), 30_000_000n);
    const gasPrice = BigInt((await cast(['gas-price'])).stdout);
    assert.ok(gasPrice > 0n);
  });
});
