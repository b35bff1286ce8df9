// Crash recovery (openledger only): everything a client saw acknowledged
// before a SIGKILL must be there, bit for bit, after restarting on the same
// datadir, and the chain must keep growing from the same head.
// Skipped under anvil, which keeps its chain in memory.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ContractFactory, Wallet, encodeBytes32String } from 'ethers';
import { startNode, IS_ANVIL, NODE_UNDER_TEST } from './harness.js';
import { ETHER, GWEI, ethersProvider, openToken, rpcResult } from './lib.js';

const SKIP = IS_ANVIL ? 'anvil keeps its state in memory; crash recovery applies to openledger only' : false;

describe('crash recovery (SIGKILL + restart on the same datadir)', { skip: SKIP }, () => {
  let node;
  let provider;
  let wallets;
  let token;
  let tokenAddress;
  const txHashes = [];
  const extraAddresses = [Wallet.createRandom().address, Wallet.createRandom().address];

  /** Everything observable that must survive the crash. */
  async function snapshot() {
    const url = node.directRpcUrl;
    const head = Number(BigInt(await rpcResult(url, 'eth_blockNumber')));
    const blocks = [];
    for (let n = 0; n <= head; n++) {
      blocks.push(await rpcResult(url, 'eth_getBlockByNumber', [`0x${n.toString(16)}`, true]));
    }
    const receipts = [];
    for (const h of txHashes) receipts.push(await rpcResult(url, 'eth_getTransactionReceipt', [h]));
    const txs = [];
    for (const h of txHashes) txs.push(await rpcResult(url, 'eth_getTransactionByHash', [h]));
    const addresses = [...node.accounts.map((a) => a.address), ...extraAddresses, tokenAddress];
    const accounts = {};
    for (const a of addresses) {
      accounts[a] = {
        balance: await rpcResult(url, 'eth_getBalance', [a, 'latest']),
        nonce: await rpcResult(url, 'eth_getTransactionCount', [a, 'latest']),
        code: await rpcResult(url, 'eth_getCode', [a, 'latest']),
      };
    }
    const storage = [];
    for (let slot = 0; slot < 8; slot++) {
      storage.push(await rpcResult(url, 'eth_getStorageAt', [tokenAddress, `0x${slot.toString(16)}`, 'latest']));
    }
    const logs = await rpcResult(url, 'eth_getLogs', [{ fromBlock: '0x0', toBlock: 'latest', address: tokenAddress }]);
    const counter = await rpcResult(url, 'eth_call', [{ to: tokenAddress, data: token.interface.encodeFunctionData('counter') }, 'latest']);
    return { head, blocks, receipts, txs, accounts, storage, logs, counter };
  }

  async function activity(round) {
    const [a0, a1, a2, a3] = wallets;
    const sends = [
      () => a1.sendTransaction({ to: extraAddresses[0], value: ETHER + BigInt(round) }), // type 2
      () => a2.sendTransaction({ type: 1, to: extraAddresses[1], value: 7n, gasPrice: 2n * GWEI, accessList: [] }), // type 1
      () => a3.sendTransaction({ type: 0, to: extraAddresses[0], value: 11n, gasPrice: 3n * GWEI }), // type 0
      () => token.connect(a0).increment(encodeBytes32String(`round ${round}`)),
      () => token.connect(a0).transfer(a3.address, 1000n + BigInt(round)),
      () => token.connect(a1).fail.send({ gasLimit: 60_000n }), // mined with status 0
    ];
    for (const send of sends) {
      const tx = await send();
      txHashes.push(tx.hash);
      await provider.waitForTransaction(tx.hash, 1, 60_000);
    }
  }

  before(async () => {
    node = await startNode();
    provider = ethersProvider(node.rpcUrl);
    wallets = node.accounts.map((a) => new Wallet(a.privateKey, provider));
    const { abi, bytecode } = openToken();
    const contract = await new ContractFactory(abi, bytecode, wallets[0]).deploy(10n ** 24n);
    await contract.waitForDeployment();
    txHashes.push(contract.deploymentTransaction().hash);
    tokenAddress = await contract.getAddress();
    token = contract;
    await activity(1);
  });

  after(async () => {
    provider?.destroy();
    await node?.stop();
  });

  test(`state acknowledged before SIGKILL survives a restart (${NODE_UNDER_TEST})`, async () => {
    const before = await snapshot();
    assert.ok(before.head >= 7, `expected activity to produce blocks, head=${before.head}`);
    assert.equal(before.receipts.filter((r) => r.status === '0x0').length, 1, 'one reverted tx');

    await node.restart();

    const after = await snapshot();
    assert.equal(after.head, before.head, 'block number');
    for (let n = 0; n <= before.head; n++) {
      assert.deepEqual(after.blocks[n], before.blocks[n], `block ${n}`);
    }
    assert.deepEqual(after.receipts, before.receipts, 'receipts');
    assert.deepEqual(after.txs, before.txs, 'transactions');
    assert.deepEqual(after.accounts, before.accounts, 'balances / nonces / code');
    assert.deepEqual(after.storage, before.storage, 'contract storage');
    assert.deepEqual(after.logs, before.logs, 'logs');
    assert.equal(after.counter, before.counter, 'eth_call on restored state');
  });

  test('after the restart the chain keeps producing blocks on top of the old head', async () => {
    const url = node.directRpcUrl;
    const headBefore = await rpcResult(url, 'eth_getBlockByNumber', ['latest', false]);
    const nonce = await provider.getTransactionCount(wallets[1].address);
    const counterBefore = await token.counter();

    await activity(2);
    const headAfter = await rpcResult(url, 'eth_getBlockByNumber', ['latest', false]);
    assert.ok(BigInt(headAfter.number) > BigInt(headBefore.number), 'new blocks');
    const next = await rpcResult(url, 'eth_getBlockByNumber', [`0x${(BigInt(headBefore.number) + 1n).toString(16)}`, false]);
    assert.equal(next.parentHash, headBefore.hash, 'first new block builds on the pre-crash head');
    assert.equal(await provider.getTransactionCount(wallets[1].address), nonce + 2, 'nonces continue (transfer + reverted call)');
    assert.equal(await token.counter(), counterBefore + 1n);

    // and a second crash right after the latest acknowledged receipt
    const before = await snapshot();
    await node.restart();
    const after = await snapshot();
    assert.deepEqual(after, before, 'second crash: identical state');
    const tx = await wallets[5].sendTransaction({ to: extraAddresses[1], value: 1n });
    const receipt = await tx.wait();
    assert.equal(receipt.status, 1);
    assert.equal(receipt.blockNumber, before.head + 1);
  });
});
