// viem against the node under test: HTTP reads/writes with a local account,
// and WebSocket subscriptions (eth_subscribe newHeads / logs).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import {
  BaseError,
  ContractFunctionRevertedError,
  createPublicClient,
  createWalletClient,
  encodeFunctionData,
  http,
  parseAbiItem,
  parseEther,
  stringToHex,
  webSocket,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { startNode, CHAIN_ID } from './harness.js';
import { ETHER, GWEI, openToken, sleep } from './lib.js';

/** Resolves when predicate() is truthy; rejects after timeoutMs. */
async function until(predicate, what, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** Like until() but resolves false instead of throwing. */
async function within(predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}

/**
 * A subscription is live once it delivers something: send probe transactions
 * until `delivered(hashOrReceipt)` sees one (instead of sleeping and hoping).
 */
async function primeSubscription(probe, delivered, what) {
  for (let attempt = 0; attempt < 20; attempt++) {
    const r = await probe();
    if (await within(() => delivered(r), 1_500)) return;
  }
  throw new Error(`subscription for ${what} never delivered a probe event`);
}

describe('viem', () => {
  let node;
  let chain;
  let publicClient; // HTTP
  let wsClient; // WebSocket
  let accounts; // viem local accounts
  let artifact;

  const walletFor = (account) =>
    createWalletClient({ account, chain, transport: http(node.rpcUrl), pollingInterval: 100 });

  before(async () => {
    node = await startNode();
    chain = {
      id: CHAIN_ID,
      name: 'OpenLedger Devnet',
      nativeCurrency: { name: 'Open', symbol: 'OPEN', decimals: 18 },
      rpcUrls: { default: { http: [node.rpcUrl], webSocket: [node.wsUrl] } },
    };
    publicClient = createPublicClient({ chain, transport: http(node.rpcUrl), pollingInterval: 100 });
    wsClient = createPublicClient({ chain, transport: webSocket(node.wsUrl), pollingInterval: 100 });
    accounts = node.accounts.map((a) => privateKeyToAccount(a.privateKey));
    artifact = openToken();
  });

  after(async () => {
    try {
      const rpcClient = await wsClient?.transport?.getRpcClient?.();
      rpcClient?.close?.();
    } catch {
      // ignore
    }
    await node?.stop();
  });

  test('getChainId, getBlockNumber, getBalance', async () => {
    assert.equal(await publicClient.getChainId(), CHAIN_ID);
    assert.equal(typeof (await publicClient.getBlockNumber()), 'bigint');
    assert.equal(await publicClient.getBalance({ address: accounts[9].address }), 10_000n * ETHER);
    assert.equal(await publicClient.getTransactionCount({ address: accounts[9].address }), 0);
  });

  test('sendTransaction from a local account + waitForTransactionReceipt', async () => {
    const from = accounts[1];
    const to = '0x0000000000000000000000000000000000a11ce0';
    const wallet = walletFor(from);
    const before = await publicClient.getBalance({ address: from.address });
    const hash = await wallet.sendTransaction({ to, value: parseEther('2.5') });
    const receipt = await publicClient.waitForTransactionReceipt({ hash, pollingInterval: 100, timeout: 60_000 });
    assert.equal(receipt.status, 'success');
    assert.equal(receipt.type, 'eip1559');
    assert.equal(receipt.gasUsed, 21000n);
    assert.equal(receipt.transactionHash, hash);
    assert.equal(await publicClient.getBalance({ address: to }), parseEther('2.5'));
    assert.equal(
      await publicClient.getBalance({ address: from.address }),
      before - parseEther('2.5') - receipt.gasUsed * receipt.effectiveGasPrice,
    );
    const tx = await publicClient.getTransaction({ hash });
    assert.equal(tx.from.toLowerCase(), from.address.toLowerCase());
    assert.equal(tx.chainId, CHAIN_ID);
  });

  test('legacy and EIP-2930 transactions from a local account', async () => {
    const wallet = walletFor(accounts[2]);
    const h0 = await wallet.sendTransaction({ type: 'legacy', to: accounts[8].address, value: 1n, gasPrice: 2n * GWEI });
    const r0 = await publicClient.waitForTransactionReceipt({ hash: h0, pollingInterval: 100 });
    assert.equal(r0.status, 'success');
    assert.equal(r0.type, 'legacy');
    const h1 = await wallet.sendTransaction({
      type: 'eip2930',
      to: accounts[8].address,
      value: 1n,
      gasPrice: 2n * GWEI,
      accessList: [{ address: accounts[7].address, storageKeys: [] }],
    });
    const r1 = await publicClient.waitForTransactionReceipt({ hash: h1, pollingInterval: 100 });
    assert.equal(r1.status, 'success');
    assert.equal(r1.type, 'eip2930');
    assert.equal(r1.gasUsed, 21000n + 2400n);
  });

  describe('contract + WebSocket subscriptions', () => {
    let address;
    let deployer;
    let wallet;

    before(async () => {
      deployer = accounts[0];
      wallet = walletFor(deployer);
      const hash = await wallet.deployContract({ abi: artifact.abi, bytecode: artifact.bytecode, args: [1000n] });
      const receipt = await publicClient.waitForTransactionReceipt({ hash, pollingInterval: 100 });
      assert.equal(receipt.status, 'success');
      address = receipt.contractAddress;
      assert.ok(address);
    });

    test('readContract, writeContract, simulateContract revert reason', async () => {
      assert.equal(await publicClient.readContract({ address, abi: artifact.abi, functionName: 'totalSupply' }), 1000n);
      const hash = await wallet.writeContract({ address, abi: artifact.abi, functionName: 'transfer', args: [accounts[5].address, 10n] });
      const receipt = await publicClient.waitForTransactionReceipt({ hash, pollingInterval: 100 });
      assert.equal(receipt.logs.length, 1);
      assert.equal(receipt.logs[0].address.toLowerCase(), address.toLowerCase());
      assert.equal(
        await publicClient.readContract({ address, abi: artifact.abi, functionName: 'balanceOf', args: [accounts[5].address] }),
        10n,
      );
      await assert.rejects(
        publicClient.simulateContract({ account: deployer, address, abi: artifact.abi, functionName: 'fail' }),
        (err) => {
          assert.ok(err instanceof BaseError, String(err));
          const revert = err.walk((e) => e instanceof ContractFunctionRevertedError);
          assert.ok(revert, `no ContractFunctionRevertedError in ${err.message}`);
          assert.equal(revert.reason, 'OpenToken: deliberate failure');
          return true;
        },
      );
    });

    test('eth_chainId and eth_blockNumber over WebSocket', async () => {
      assert.equal(await wsClient.getChainId(), CHAIN_ID);
      assert.equal(await wsClient.getBlockNumber(), await publicClient.getBlockNumber());
      assert.equal(await wsClient.getBalance({ address: accounts[9].address }), 10_000n * ETHER);
    });

    test('watchBlocks (eth_subscribe newHeads) delivers every new block', async () => {
      const seen = [];
      const errors = [];
      const unwatch = wsClient.watchBlocks({
        onBlock: (block) => seen.push(block),
        onError: (e) => errors.push(e),
        emitMissed: false,
      });
      const w = walletFor(accounts[3]);
      const probe = async () =>
        publicClient.waitForTransactionReceipt({ hash: await w.sendTransaction({ to: accounts[8].address, value: 1n }), pollingInterval: 100 });
      try {
        await primeSubscription(probe, (r) => seen.some((b) => b.number === r.blockNumber), 'newHeads');
        const start = await publicClient.getBlockNumber();
        const receipts = [];
        for (let i = 0; i < 3; i++) {
          const hash = await w.sendTransaction({ to: accounts[8].address, value: BigInt(i + 1) });
          receipts.push(await publicClient.waitForTransactionReceipt({ hash, pollingInterval: 100 }));
        }
        const wanted = receipts.map((r) => r.blockNumber);
        await until(() => wanted.every((n) => seen.some((b) => b.number === n)), `newHeads for blocks ${wanted}`);
        assert.deepEqual(errors, []);
        for (const r of receipts) {
          const b = seen.find((x) => x.number === r.blockNumber);
          assert.equal(b.hash, r.blockHash);
          assert.ok(b.number > start);
          assert.equal(typeof b.timestamp, 'bigint');
          assert.equal(typeof b.baseFeePerGas, 'bigint');
          assert.equal(b.gasLimit, 30_000_000n);
        }
      } finally {
        unwatch();
      }
    });

    test('watchBlockNumber over WebSocket', async () => {
      const numbers = [];
      const unwatch = wsClient.watchBlockNumber({ onBlockNumber: (n) => numbers.push(n), emitMissed: false });
      try {
        const w = walletFor(accounts[3]);
        const probe = async () =>
          publicClient.waitForTransactionReceipt({ hash: await w.sendTransaction({ to: accounts[8].address, value: 1n }), pollingInterval: 100 });
        await primeSubscription(probe, (r) => numbers.includes(r.blockNumber), 'block numbers');
        const r = await probe();
        await until(() => numbers.includes(r.blockNumber), `block number ${r.blockNumber}`);
        assert.ok(numbers.every((n, i) => i === 0 || n > numbers[i - 1]), `increasing: ${numbers}`);
      } finally {
        unwatch();
      }
    });

    test('watchContractEvent (eth_subscribe logs) receives Incremented events', async () => {
      const logs = [];
      const unwatch = wsClient.watchContractEvent({
        address,
        abi: artifact.abi,
        eventName: 'Incremented',
        onLogs: (batch) => logs.push(...batch),
      });
      const increment = async (note) => {
        const hash = await wallet.writeContract({
          address,
          abi: artifact.abi,
          functionName: 'increment',
          args: [stringToHex(note, { size: 32 })],
        });
        await publicClient.waitForTransactionReceipt({ hash, pollingInterval: 100 });
        return hash;
      };
      try {
        await primeSubscription(() => increment('probe'), (h) => logs.some((l) => l.transactionHash === h), 'Incremented logs');
        const primed = logs.length;
        const hashes = [];
        for (const note of ['one', 'two']) {
          const hash = await wallet.writeContract({
            address,
            abi: artifact.abi,
            functionName: 'increment',
            args: [stringToHex(note, { size: 32 })],
          });
          await publicClient.waitForTransactionReceipt({ hash, pollingInterval: 100 });
          hashes.push(hash);
        }
        // an unrelated event from the same contract must not be delivered
        const other = await wallet.writeContract({ address, abi: artifact.abi, functionName: 'approve', args: [accounts[4].address, 5n] });
        await publicClient.waitForTransactionReceipt({ hash: other, pollingInterval: 100 });

        await until(() => logs.length >= primed + 2, 'two Incremented logs');
        await sleep(300);
        const fresh = logs.slice(primed);
        assert.deepEqual(fresh.map((l) => l.transactionHash), hashes, 'exactly the two Incremented logs, in order');
        assert.ok(!logs.some((l) => l.transactionHash === other), 'Approval log must not match the Incremented filter');
        for (const l of fresh) {
          assert.equal(l.eventName, 'Incremented');
          assert.equal(l.address.toLowerCase(), address.toLowerCase());
          assert.equal(l.args.by.toLowerCase(), deployer.address.toLowerCase());
          assert.equal(l.removed, false);
          assert.equal(typeof l.blockNumber, 'bigint');
          assert.equal(typeof l.logIndex, 'number');
        }
        assert.equal(fresh[1].args.newValue, fresh[0].args.newValue + 1n);
      } finally {
        unwatch();
      }
    });

    test('watchEvent with an indexed-argument filter', async () => {
      const target = accounts[6].address;
      const logs = [];
      const unwatch = wsClient.watchEvent({
        address,
        event: parseAbiItem('event Transfer(address indexed from, address indexed to, uint256 value)'),
        args: { to: target },
        onLogs: (batch) => logs.push(...batch),
      });
      const transfer = async (to, amount) => {
        const hash = await wallet.writeContract({ address, abi: artifact.abi, functionName: 'transfer', args: [to, amount] });
        await publicClient.waitForTransactionReceipt({ hash, pollingInterval: 100 });
        return hash;
      };
      try {
        await primeSubscription(() => transfer(target, 1n), (h) => logs.some((l) => l.transactionHash === h), 'Transfer logs');
        const primed = logs.length;
        const h1 = await transfer(accounts[7].address, 1n);
        const h2 = await transfer(target, 3n);
        await until(() => logs.some((l) => l.transactionHash === h2), 'Transfer to target');
        await sleep(300);
        const fresh = logs.slice(primed);
        assert.ok(!logs.some((l) => l.transactionHash === h1), 'filter on topic2 excludes the transfer to someone else');
        assert.equal(fresh.length, 1);
        assert.equal(fresh[0].transactionHash, h2);
        assert.equal(fresh[0].args.to.toLowerCase(), target.toLowerCase());
        assert.equal(fresh[0].args.value, 3n);
      } finally {
        unwatch();
      }
    });

    test('raw eth_subscribe / eth_subscription notifications / eth_unsubscribe', async () => {
      const ws = new WebSocket(node.wsUrl);
      const messages = [];
      ws.on('message', (data) => messages.push(JSON.parse(data.toString())));
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      try {
        const send = (id, method, params) => ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
        const response = async (id) => {
          await until(() => messages.some((m) => m.id === id), `response ${id}`);
          return messages.find((m) => m.id === id);
        };
        send(1, 'eth_subscribe', ['newHeads']);
        send(2, 'eth_subscribe', ['logs', { address, topics: [] }]);
        const headsSub = (await response(1)).result;
        const logsSub = (await response(2)).result;
        assert.match(headsSub, /^0x[0-9a-f]+$/i);
        assert.match(logsSub, /^0x[0-9a-f]+$/i);
        assert.notEqual(headsSub, logsSub);

        const data = encodeFunctionData({ abi: artifact.abi, functionName: 'increment', args: [stringToHex('raw', { size: 32 })] });
        const hash = await wallet.sendTransaction({ to: address, data });
        const r = await publicClient.waitForTransactionReceipt({ hash, pollingInterval: 100 });

        const notes = () => messages.filter((m) => m.method === 'eth_subscription');
        await until(
          () => notes().some((m) => m.params.subscription === headsSub && BigInt(m.params.result.number) === r.blockNumber) &&
            notes().some((m) => m.params.subscription === logsSub && m.params.result.transactionHash === hash),
          'newHeads + logs notifications',
        );
        const head = notes().find((m) => m.params.subscription === headsSub && BigInt(m.params.result.number) === r.blockNumber);
        assert.equal(head.jsonrpc, '2.0');
        assert.equal(head.params.result.hash, r.blockHash);
        for (const k of ['parentHash', 'number', 'timestamp', 'gasLimit', 'gasUsed', 'baseFeePerGas', 'miner', 'stateRoot', 'logsBloom']) {
          assert.ok(k in head.params.result, `newHeads field ${k}`);
        }
        const log = notes().find((m) => m.params.subscription === logsSub).params.result;
        assert.equal(log.address.toLowerCase(), address.toLowerCase());
        assert.equal(log.blockHash, r.blockHash);
        assert.equal(BigInt(log.blockNumber), r.blockNumber);
        assert.equal(log.removed, false);
        assert.equal(log.topics.length, 3);
        for (const k of ['data', 'logIndex', 'transactionIndex']) assert.ok(k in log, `log field ${k}`);

        send(3, 'eth_unsubscribe', [headsSub]);
        assert.equal((await response(3)).result, true);
        send(4, 'eth_unsubscribe', [logsSub]);
        assert.equal((await response(4)).result, true);
        // after unsubscribing, no new notifications arrive
        const count = notes().length;
        const h2 = await wallet.sendTransaction({ to: address, data });
        await publicClient.waitForTransactionReceipt({ hash: h2, pollingInterval: 100 });
        await sleep(500);
        assert.equal(notes().length, count);

        // ordinary requests work on the same socket
        send(5, 'eth_chainId', []);
        assert.equal(BigInt((await response(5)).result), BigInt(CHAIN_ID));
      } finally {
        ws.close();
      }
    });
  });
});
