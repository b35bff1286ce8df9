// Polling filters over plain HTTP: how ethers' contract.on(), web3.js and viem (without a
// WebSocket) follow blocks and events. Runs against anvil too.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ContractFactory, Wallet, id as topicOf } from 'ethers';
import { startNode } from './harness.js';
import { ETHER, ethersProvider, openToken, rpc, rpcResult, sleep } from './lib.js';

describe('polling filters', () => {
  let node;
  let provider;
  let owner;
  let token;

  before(async () => {
    node = await startNode();
    provider = ethersProvider(node.rpcUrl);
    owner = new Wallet(node.accounts[0].privateKey, provider);
    const { abi, bytecode } = openToken();
    token = await new ContractFactory(abi, bytecode, owner).deploy(1_000n * ETHER);
    await token.waitForDeployment();
  });
  after(async () => {
    provider?.destroy();
    await node?.stop();
  });

  test('a log filter reports each matching log once, and only new ones', async () => {
    const address = await token.getAddress();
    const id = await rpcResult(node.rpcUrl, 'eth_newFilter', [{ fromBlock: '0x0', address, topics: [topicOf('Transfer(address,address,uint256)')] }]);
    const first = await rpcResult(node.rpcUrl, 'eth_getFilterChanges', [id]);
    assert.deepEqual(first.map((l) => BigInt(l.data)), [1_000n * ETHER], 'the first poll covers fromBlock: the mint');
    await (await token.transfer(node.accounts[1].address, 5n)).wait();
    await (await token.increment('0x' + '00'.repeat(32))).wait(); // another event, not Transfer
    await (await token.transfer(node.accounts[2].address, 6n)).wait();
    const changes = await rpcResult(node.rpcUrl, 'eth_getFilterChanges', [id]);
    assert.equal(changes.length, 2);
    assert.deepEqual(changes.map((l) => BigInt(l.data)), [5n, 6n]);
    assert.deepEqual(await rpcResult(node.rpcUrl, 'eth_getFilterChanges', [id]), [], 'reported only once');
    const all = await rpcResult(node.rpcUrl, 'eth_getFilterLogs', [id]);
    assert.deepEqual(all.map((l) => BigInt(l.data)), [1_000n * ETHER, 5n, 6n], "eth_getFilterLogs: the filter's whole range, mint included");
    assert.equal(await rpcResult(node.rpcUrl, 'eth_uninstallFilter', [id]), true);
    const gone = await rpc(node.rpcUrl, 'eth_getFilterChanges', [id]);
    assert.ok(gone.error, 'an uninstalled filter is gone');
  });

  test('a block filter reports new block hashes', async () => {
    const id = await rpcResult(node.rpcUrl, 'eth_newBlockFilter', []);
    const receipt = await (await owner.sendTransaction({ to: node.accounts[3].address, value: 1n })).wait();
    const hashes = await rpcResult(node.rpcUrl, 'eth_getFilterChanges', [id]);
    assert.ok(hashes.includes(receipt.blockHash), `${receipt.blockHash} in ${JSON.stringify(hashes)}`);
  });

  test("ethers' contract.on over HTTP receives events", async () => {
    const seen = [];
    await token.on('Transfer', (from, to, value) => seen.push(value));
    await sleep(300); // let ethers install its filter
    await (await token.transfer(node.accounts[4].address, 77n)).wait();
    for (let i = 0; i < 100 && !seen.includes(77n); i++) await sleep(100);
    await token.removeAllListeners();
    await sleep(500); // ethers uninstalls its filter in the background
    assert.ok(seen.includes(77n), `saw ${seen}`);
  });
});
