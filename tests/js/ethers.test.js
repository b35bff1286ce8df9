// ethers v6 against the node under test: balances, the three transaction
// types, contract deployment/calls/events, receipts, estimateGas, revert
// reasons, code/storage, fee history and block queries.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Contract, ContractFactory, Wallet, encodeBytes32String, id as keccakId, isError, toBeHex, zeroPadValue, ZeroAddress } from 'ethers';
import { startNode, CHAIN_ID } from './harness.js';
import { ETHER, GWEI, ethersProvider, openToken } from './lib.js';

const INITIAL_SUPPLY = 1_000_000n * ETHER;

describe('ethers v6', () => {
  let node;
  let provider;
  let wallets; // ethers Wallets for the 10 dev accounts
  let artifact;

  before(async () => {
    node = await startNode();
    provider = ethersProvider(node.rpcUrl);
    wallets = node.accounts.map((a) => new Wallet(a.privateKey, provider));
    artifact = openToken();
  });
  after(async () => {
    provider?.destroy();
    await node?.stop();
  });

  test('network and chain id', async () => {
    const net = await provider.send('eth_chainId', []);
    assert.equal(BigInt(net), BigInt(CHAIN_ID));
    assert.equal(String(BigInt(await provider.send('net_version', []))), String(CHAIN_ID));
  });

  test('the 10 dev accounts are prefunded with 10000 OPEN and have nonce 0', async () => {
    // Runs first in this file; accounts 6..9 are never used as senders below.
    for (const w of wallets.slice(6)) {
      assert.equal(await provider.getBalance(w.address), 10_000n * ETHER, `balance of ${w.address}`);
      assert.equal(await provider.getTransactionCount(w.address), 0);
    }
    const expected = [
      '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266',
      '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
      '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC',
    ];
    assert.deepEqual(node.accounts.slice(0, 3).map((a) => a.address), expected);
    // an address nobody funded
    assert.equal(await provider.getBalance('0x000000000000000000000000000000000000bEEF'), 0n);
  });

  test('EIP-1559 (type 2) value transfer with ethers-populated fees', async () => {
    const sender = wallets[1];
    const to = Wallet.createRandom().address;
    const before = await provider.getBalance(sender.address);
    const nonce = await provider.getTransactionCount(sender.address);
    const tx = await sender.sendTransaction({ to, value: 123n * GWEI });
    assert.equal(tx.type, 2);
    const receipt = await tx.wait();
    assert.equal(receipt.status, 1);
    assert.equal(receipt.type, 2);
    assert.equal(receipt.gasUsed, 21000n);
    assert.equal(receipt.cumulativeGasUsed, 21000n, 'single tx per block under instant mining');
    assert.equal(receipt.to, to);
    assert.equal(receipt.from, sender.address);
    assert.equal(receipt.contractAddress, null);
    assert.equal(receipt.logs.length, 0);
    assert.ok(receipt.gasPrice > 0n, 'effectiveGasPrice');
    const block = await provider.getBlock(receipt.blockNumber);
    assert.ok(receipt.gasPrice >= block.baseFeePerGas, 'effectiveGasPrice >= baseFee');
    assert.ok(receipt.gasPrice <= tx.maxFeePerGas);
    assert.equal(receipt.gasPrice, min(tx.maxFeePerGas, block.baseFeePerGas + tx.maxPriorityFeePerGas));
    assert.equal(await provider.getBalance(to), 123n * GWEI);
    assert.equal(await provider.getBalance(sender.address), before - 123n * GWEI - receipt.gasUsed * receipt.gasPrice);
    assert.equal(await provider.getTransactionCount(sender.address), nonce + 1);

    const fetched = await provider.getTransaction(tx.hash);
    assert.equal(fetched.hash, tx.hash);
    assert.equal(fetched.type, 2);
    assert.equal(fetched.chainId, BigInt(CHAIN_ID));
    assert.equal(fetched.nonce, nonce);
    assert.equal(fetched.from, sender.address);
    assert.equal(fetched.value, 123n * GWEI);
    assert.equal(fetched.maxFeePerGas, tx.maxFeePerGas);
    assert.equal(fetched.maxPriorityFeePerGas, tx.maxPriorityFeePerGas);
    assert.equal(fetched.blockNumber, receipt.blockNumber);
    assert.equal(fetched.blockHash, receipt.blockHash);
    assert.equal(fetched.index, 0);
  });

  test('EIP-2930 (type 1) transfer with an access list', async () => {
    const sender = wallets[2];
    const to = Wallet.createRandom().address;
    const accessList = [
      {
        address: '0x000000000000000000000000000000000000c0de',
        storageKeys: [zeroPadValue('0x01', 32), zeroPadValue('0x02', 32)],
      },
    ];
    const tx = await sender.sendTransaction({ type: 1, to, value: 7n, gasPrice: 2n * GWEI, gasLimit: 40_000n, accessList });
    const receipt = await tx.wait();
    assert.equal(receipt.status, 1);
    assert.equal(receipt.type, 1);
    // 21000 + 2400 per address + 1900 per storage key (EIP-2930)
    assert.equal(receipt.gasUsed, 21000n + 2400n + 2n * 1900n);
    assert.equal(receipt.gasPrice, 2n * GWEI);
    const fetched = await provider.getTransaction(tx.hash);
    assert.equal(fetched.type, 1);
    assert.equal(fetched.gasPrice, 2n * GWEI);
    assert.deepEqual(
      fetched.accessList.map((e) => ({ address: e.address.toLowerCase(), storageKeys: [...e.storageKeys] })),
      accessList.map((e) => ({ address: e.address.toLowerCase(), storageKeys: e.storageKeys })),
    );
    assert.equal(await provider.getBalance(to), 7n);
  });

  test('legacy (type 0) transfer', async () => {
    const sender = wallets[3];
    const to = Wallet.createRandom().address;
    const before = await provider.getBalance(sender.address);
    const tx = await sender.sendTransaction({ type: 0, to, value: ETHER, gasPrice: 3n * GWEI });
    const receipt = await tx.wait();
    assert.equal(receipt.status, 1);
    assert.equal(receipt.type, 0);
    assert.equal(receipt.gasPrice, 3n * GWEI);
    const fetched = await provider.getTransaction(tx.hash);
    assert.equal(fetched.type, 0);
    assert.equal(fetched.chainId, BigInt(CHAIN_ID), 'EIP-155 replay protection');
    assert.equal(await provider.getBalance(to), ETHER);
    assert.equal(await provider.getBalance(sender.address), before - ETHER - 21000n * 3n * GWEI);
  });

  test('eth_estimateGas for a plain transfer is 21000', async () => {
    const gas = await provider.estimateGas({ from: wallets[4].address, to: wallets[5].address, value: 1n });
    assert.equal(gas, 21000n);
  });

  describe('OpenToken contract', () => {
    let deployer;
    let token;
    let tokenAddress;
    let deployReceipt;

    before(async () => {
      deployer = wallets[0];
      const factory = new ContractFactory(artifact.abi, artifact.bytecode, deployer);
      token = await factory.deploy(INITIAL_SUPPLY);
      await token.waitForDeployment();
      tokenAddress = await token.getAddress();
      deployReceipt = await token.deploymentTransaction().wait();
    });

    test('deployment receipt has contractAddress, status, gasUsed and the constructor log', async () => {
      assert.equal(deployReceipt.status, 1);
      assert.equal(deployReceipt.contractAddress, tokenAddress);
      assert.equal(deployReceipt.to, null);
      assert.ok(deployReceipt.gasUsed > 100_000n);
      assert.equal(deployReceipt.logs.length, 1);
      const log = deployReceipt.logs[0];
      assert.equal(log.address, tokenAddress);
      assert.equal(log.topics[0], keccakId('Transfer(address,address,uint256)'));
      assert.equal(log.topics[1], zeroPadValue('0x', 32));
      assert.equal(log.topics[2], zeroPadValue(deployer.address.toLowerCase(), 32));
      assert.equal(BigInt(log.data), INITIAL_SUPPLY);
      assert.equal(log.transactionHash, deployReceipt.hash);
      assert.equal(log.blockNumber, deployReceipt.blockNumber);
      assert.equal(log.blockHash, deployReceipt.blockHash);
      assert.equal(log.index, 0);
    });

    test('eth_getCode returns the runtime bytecode; empty for EOAs', async () => {
      assert.equal((await provider.getCode(tokenAddress)).toLowerCase(), artifact.deployedBytecode.toLowerCase());
      assert.equal(await provider.getCode(wallets[9].address), '0x');
    });

    test('view functions', async () => {
      assert.equal(await token.name(), 'Open Test Token');
      assert.equal(await token.symbol(), 'OTT');
      assert.equal(await token.decimals(), 18n);
      assert.equal(await token.totalSupply(), INITIAL_SUPPLY);
      assert.equal(await token.balanceOf(deployer.address), INITIAL_SUPPLY);
      assert.equal(await token.owner(), deployer.address);
    });

    test('state-changing calls, events in receipts, eth_getStorageAt', async () => {
      const to = wallets[5].address;
      const tx = await token.transfer(to, 1000n);
      const receipt = await tx.wait();
      assert.equal(receipt.status, 1);
      assert.equal(receipt.logs.length, 1);
      const parsed = token.interface.parseLog(receipt.logs[0]);
      assert.equal(parsed.name, 'Transfer');
      assert.equal(parsed.args.from, deployer.address);
      assert.equal(parsed.args.to, to);
      assert.equal(parsed.args.value, 1000n);
      assert.equal(await token.balanceOf(to), 1000n);

      const inc = await (await token.increment(encodeBytes32String('hello'))).wait();
      const ev = token.interface.parseLog(inc.logs[0]);
      assert.equal(ev.name, 'Incremented');
      assert.equal(ev.args.newValue, 1n);
      assert.equal(ev.args.note, encodeBytes32String('hello'));

      // storage layout: slot 2 totalSupply, slot 3 counter, slot 4 owner
      assert.equal(BigInt(await provider.getStorage(tokenAddress, 2)), INITIAL_SUPPLY);
      assert.equal(BigInt(await provider.getStorage(tokenAddress, 3)), 1n);
      assert.equal(await provider.getStorage(tokenAddress, 4), zeroPadValue(deployer.address.toLowerCase(), 32));
      // slot 0: short string "Open Test Token" stored inline, length*2 in the last byte
      const slot0 = await provider.getStorage(tokenAddress, 0);
      assert.equal(slot0.slice(0, 32), `0x${Buffer.from('Open Test Token').toString('hex')}`);
      assert.equal(parseInt(slot0.slice(-2), 16), 'Open Test Token'.length * 2);
      // never-written slot
      assert.equal(BigInt(await provider.getStorage(tokenAddress, 99)), 0n);
    });

    test('payable call moves value into the contract', async () => {
      const tx = await token.connect(wallets[4]).deposit({ value: 5n * GWEI });
      const receipt = await tx.wait();
      assert.equal(receipt.status, 1);
      assert.equal(await provider.getBalance(tokenAddress), 5n * GWEI);
      assert.equal(await token.contractBalance(), 5n * GWEI);
    });

    test('eth_estimateGas for contract calls', async () => {
      const est = await token.increment.estimateGas(encodeBytes32String('x'));
      assert.ok(est > 21000n && est < 200_000n, `estimate ${est}`);
      // an estimate must be enough: sending with exactly that limit succeeds
      const receipt = await (await token.increment(encodeBytes32String('x'), { gasLimit: est })).wait();
      assert.equal(receipt.status, 1);
      assert.ok(receipt.gasUsed <= est);
    });

    test('reverted eth_call surfaces the revert reason (CALL_EXCEPTION)', async () => {
      await assert.rejects(token.fail.staticCall(), (err) => {
        assert.ok(isError(err, 'CALL_EXCEPTION'), `expected CALL_EXCEPTION, got ${err.code}: ${err.message}`);
        assert.equal(err.reason, 'OpenToken: deliberate failure');
        assert.equal(err.revert?.name, 'Error');
        assert.deepEqual([...err.revert.args], ['OpenToken: deliberate failure']);
        return true;
      });
      // require() with a reason inside a state-changing function
      await assert.rejects(token.connect(wallets[5]).transfer.staticCall(wallets[6].address, 10n ** 30n), (err) => {
        assert.ok(isError(err, 'CALL_EXCEPTION'));
        assert.equal(err.reason, 'OpenToken: transfer amount exceeds balance');
        return true;
      });
    });

    test('custom error revert data is returned and decoded', async () => {
      const stranger = wallets[5];
      await assert.rejects(token.connect(stranger).mint.staticCall(stranger.address, 1n), (err) => {
        assert.ok(isError(err, 'CALL_EXCEPTION'));
        assert.equal(err.revert?.name, 'Unauthorized');
        assert.equal(err.revert.args[0], stranger.address);
        return true;
      });
    });

    test('eth_estimateGas of a reverting call fails with the revert reason', async () => {
      await assert.rejects(token.fail.estimateGas(), (err) => {
        assert.ok(isError(err, 'CALL_EXCEPTION'), `expected CALL_EXCEPTION, got ${err.code}: ${err.message}`);
        assert.equal(err.reason, 'OpenToken: deliberate failure');
        return true;
      });
      // sending without a gas limit fails at estimation, before anything is signed
      const nonce = await provider.getTransactionCount(deployer.address);
      await assert.rejects(token.fail(), (err) => isError(err, 'CALL_EXCEPTION') && err.reason === 'OpenToken: deliberate failure');
      assert.equal(await provider.getTransactionCount(deployer.address), nonce);
    });

    test('a reverting transaction with an explicit gas limit is mined with status 0', async () => {
      const sender = wallets[4];
      const nonce = await provider.getTransactionCount(sender.address);
      const before = await provider.getBalance(sender.address);
      // fail() is pure, so a plain call would be an eth_call; .send() forces a transaction
      const tx = await token.connect(sender).fail.send({ gasLimit: 100_000n });
      await assert.rejects(tx.wait(), (err) => {
        assert.ok(isError(err, 'CALL_EXCEPTION'), `${err.code}: ${err.message}`);
        assert.equal(err.receipt.status, 0);
        return true;
      });
      const receipt = await provider.getTransactionReceipt(tx.hash);
      assert.equal(receipt.status, 0);
      assert.equal(receipt.logs.length, 0);
      assert.ok(receipt.gasUsed > 21000n && receipt.gasUsed < 100_000n);
      assert.equal(await provider.getTransactionCount(sender.address), nonce + 1, 'nonce is consumed');
      assert.equal(await provider.getBalance(sender.address), before - receipt.gasUsed * receipt.gasPrice, 'gas is charged');
    });

    test('eth_getLogs with address, topic filters and block ranges', async () => {
      const incrementer = token.connect(wallets[5]);
      const receipts = [];
      for (const note of ['a', 'b', 'c']) {
        receipts.push(await (await incrementer.increment(encodeBytes32String(note))).wait());
      }
      const first = receipts[0].blockNumber;
      const last = receipts[2].blockNumber;
      const incTopic = token.interface.getEvent('Incremented').topicHash;
      const byTopic = zeroPadValue(wallets[5].address.toLowerCase(), 32);

      // address + topic0 + topic1 across the whole chain
      const all = await provider.getLogs({ address: tokenAddress, topics: [incTopic, byTopic], fromBlock: 0, toBlock: 'latest' });
      assert.equal(all.length, 3);
      assert.deepEqual(all.map((l) => l.transactionHash), receipts.map((r) => r.hash));
      for (const [i, l] of all.entries()) {
        assert.equal(l.address, tokenAddress);
        assert.equal(l.blockNumber, receipts[i].blockNumber);
        assert.equal(l.blockHash, receipts[i].blockHash);
        assert.equal(l.transactionIndex, 0);
        assert.equal(l.index, 0);
        assert.equal(l.removed, false);
        const parsed = token.interface.parseLog(l);
        assert.equal(parsed.args.note, encodeBytes32String(['a', 'b', 'c'][i]));
      }

      // block range narrows the result (inclusive bounds)
      const middle = await provider.getLogs({ address: tokenAddress, topics: [incTopic], fromBlock: first + 1, toBlock: last - 1 });
      assert.deepEqual(middle.map((l) => l.transactionHash), [receipts[1].hash]);
      const edges = await provider.getLogs({ address: tokenAddress, topics: [incTopic], fromBlock: last, toBlock: last });
      assert.deepEqual(edges.map((l) => l.transactionHash), [receipts[2].hash]);

      // null = wildcard, array = OR
      const newValues = receipts.map((r) => token.interface.parseLog(r.logs[0]).args.newValue);
      const orTopic = [toBeHex(newValues[0], 32), toBeHex(newValues[2], 32)];
      const ored = await provider.getLogs({ address: tokenAddress, topics: [incTopic, null, orTopic], fromBlock: first, toBlock: last });
      assert.deepEqual(ored.map((l) => l.transactionHash), [receipts[0].hash, receipts[2].hash]);

      // address list; unrelated address; unrelated topic
      const listed = await provider.getLogs({ address: [tokenAddress, wallets[9].address], topics: [incTopic], fromBlock: first, toBlock: last });
      assert.equal(listed.length, 3);
      assert.equal((await provider.getLogs({ address: wallets[9].address, fromBlock: 0, toBlock: 'latest' })).length, 0);
      assert.equal((await provider.getLogs({ address: tokenAddress, topics: [keccakId('Nope()')], fromBlock: 0 })).length, 0);

      // by block hash
      const byHash = await provider.getLogs({ blockHash: receipts[1].blockHash });
      assert.deepEqual(byHash.map((l) => l.transactionHash), [receipts[1].hash]);

      // Transfer logs with from = 0 (mint in constructor) via ethers' contract filters
      const mints = await token.queryFilter(token.filters.Transfer(ZeroAddress), 0, 'latest');
      assert.equal(mints.length, 1);
      assert.equal(mints[0].args.value, INITIAL_SUPPLY);
    });

    test('eth_getBlockByNumber / ByHash, with and without full transactions', async () => {
      const n = deployReceipt.blockNumber;
      const byNumber = await provider.getBlock(n);
      assert.equal(byNumber.number, n);
      assert.equal(byNumber.hash, deployReceipt.blockHash);
      assert.deepEqual([...byNumber.transactions], [deployReceipt.hash]);
      assert.equal(byNumber.gasLimit, 30_000_000n);
      assert.equal(byNumber.gasUsed, deployReceipt.gasUsed);
      assert.equal(typeof byNumber.baseFeePerGas, 'bigint');
      assert.ok(byNumber.baseFeePerGas > 0n);
      assert.ok(byNumber.timestamp > 1_600_000_000, 'unix timestamp seconds');

      const parent = await provider.getBlock(n - 1);
      assert.equal(byNumber.parentHash, parent.hash);
      assert.ok(byNumber.timestamp >= parent.timestamp);

      const full = await provider.getBlock(deployReceipt.blockHash, true);
      assert.equal(full.hash, deployReceipt.blockHash);
      assert.equal(full.prefetchedTransactions.length, 1);
      const tx = full.prefetchedTransactions[0];
      assert.equal(tx.hash, deployReceipt.hash);
      assert.equal(tx.to, null);
      assert.equal(tx.from, deployer.address);
      assert.equal(tx.data, token.deploymentTransaction().data);

      // raw shapes
      const raw = await provider.send('eth_getBlockByNumber', [`0x${n.toString(16)}`, false]);
      for (const k of ['number', 'hash', 'parentHash', 'timestamp', 'gasLimit', 'gasUsed', 'baseFeePerGas', 'miner',
        'stateRoot', 'transactionsRoot', 'receiptsRoot', 'logsBloom', 'extraData', 'transactions']) {
        assert.ok(k in raw, `block field ${k}`);
      }
      assert.equal(typeof raw.transactions[0], 'string');
      const rawFull = await provider.send('eth_getBlockByHash', [deployReceipt.blockHash, true]);
      assert.equal(typeof rawFull.transactions[0], 'object');
      assert.equal(rawFull.transactions[0].hash, deployReceipt.hash);
      assert.equal(await provider.send('eth_getBlockByNumber', ['0xffffff', false]), null);
      assert.equal(await provider.send('eth_getBlockByHash', [`0x${'ab'.repeat(32)}`, false]), null);

      const latest = await provider.getBlock('latest');
      assert.equal(latest.number, await provider.getBlockNumber());
      assert.ok(latest.baseFeePerGas !== null);
      const genesis = await provider.getBlock(0);
      assert.equal(genesis.number, 0);
      assert.equal(genesis.baseFeePerGas, GWEI, 'genesis base fee 1 gwei');
    });

    test('receipt fields', async () => {
      const receipt = await provider.getTransactionReceipt(deployReceipt.hash);
      assert.equal(receipt.status, 1);
      assert.equal(receipt.contractAddress, tokenAddress);
      assert.equal(receipt.gasUsed, deployReceipt.gasUsed);
      assert.equal(receipt.cumulativeGasUsed, deployReceipt.gasUsed);
      assert.equal(receipt.index, 0);
      assert.ok(receipt.gasPrice > 0n);
      const raw = await provider.send('eth_getTransactionReceipt', [deployReceipt.hash]);
      for (const k of ['transactionHash', 'transactionIndex', 'blockHash', 'blockNumber', 'from', 'to', 'cumulativeGasUsed',
        'gasUsed', 'contractAddress', 'logs', 'logsBloom', 'status', 'effectiveGasPrice', 'type']) {
        assert.ok(k in raw, `receipt field ${k}`);
      }
      assert.equal(raw.status, '0x1');
      assert.equal(raw.to, null);
      assert.notEqual(raw.logsBloom, `0x${'0'.repeat(512)}`, 'bloom includes the Transfer log');
      assert.equal(await provider.send('eth_getTransactionReceipt', [`0x${'12'.repeat(32)}`]), null);
      assert.equal(await provider.send('eth_getTransactionByHash', [`0x${'12'.repeat(32)}`]), null);
    });
  });

  test('eth_feeHistory', async () => {
    const head = await provider.getBlockNumber();
    assert.ok(head >= 4, 'earlier tests produced blocks');
    const fh = await provider.send('eth_feeHistory', ['0x4', 'latest', [25, 75]]);
    assert.equal(BigInt(fh.oldestBlock), BigInt(head - 3));
    assert.equal(fh.baseFeePerGas.length, 5, 'blockCount + 1 (includes next block)');
    assert.equal(fh.gasUsedRatio.length, 4);
    assert.equal(fh.reward.length, 4);
    for (const r of fh.reward) assert.equal(r.length, 2);
    for (const ratio of fh.gasUsedRatio) assert.ok(ratio >= 0 && ratio <= 1);
    const latest = await provider.getBlock(head);
    assert.equal(BigInt(fh.baseFeePerGas[3]), latest.baseFeePerGas);
    // without percentiles
    const noReward = await provider.send('eth_feeHistory', ['0x2', 'latest', []]);
    assert.equal(noReward.baseFeePerGas.length, 3);
  });

  test('fee data (eth_gasPrice, eth_maxPriorityFeePerGas) is usable', async () => {
    const fee = await provider.getFeeData();
    const latest = await provider.getBlock('latest');
    assert.ok(fee.gasPrice >= latest.baseFeePerGas);
    assert.ok(fee.maxFeePerGas >= latest.baseFeePerGas);
    assert.ok(fee.maxPriorityFeePerGas >= 0n);
  });

  test('pending and latest nonces agree once transactions are mined', async () => {
    const w = wallets[1];
    assert.equal(await provider.getTransactionCount(w.address, 'pending'), await provider.getTransactionCount(w.address, 'latest'));
  });
});

function min(a, b) {
  return a < b ? a : b;
}
