// Differential test: the node under test and a reference anvil receive the
// same pre-signed transactions (identical raw bytes), one at a time, each
// waited for; receipts, logs, contract addresses and the final state must be
// identical. When the node under test is anvil, a second anvil is compared
// with the first (trivially equal; validates the test itself).
//
// Fee parameters are chosen so both chains charge exactly the same whatever
// their base-fee schedule: type-2 txs use maxFeePerGas == maxPriorityFeePerGas
// (effective price = maxFeePerGas as long as it covers the base fee), type-0/1
// use a fixed gasPrice. Sender balances are therefore comparable; the
// coinbase/burn split is not compared.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { AbiCoder, Interface, Wallet, concat, getCreateAddress, keccak256, toBeHex } from 'ethers';
import { startNode, CHAIN_ID, NODE_UNDER_TEST } from './harness.js';
import { ETHER, GWEI, openToken, rpc, rpcResult, waitReceipt } from './lib.js';

const FEE = 2n * GWEI;
const R1 = '0x00000000000000000000000000000000000d1ff1';
const R2 = '0x00000000000000000000000000000000000d1ff2';

const lower = (x) => (typeof x === 'string' ? x.toLowerCase() : x);
const qty = (x) => (x === null || x === undefined ? x : BigInt(x).toString());

function normReceipt(r) {
  return {
    status: qty(r.status),
    type: qty(r.type),
    gasUsed: qty(r.gasUsed),
    cumulativeGasUsed: qty(r.cumulativeGasUsed),
    effectiveGasPrice: qty(r.effectiveGasPrice),
    from: lower(r.from),
    to: lower(r.to),
    contractAddress: lower(r.contractAddress),
    transactionIndex: qty(r.transactionIndex),
    logsBloom: lower(r.logsBloom),
    logs: r.logs.map((l) => ({
      address: lower(l.address),
      topics: l.topics.map(lower),
      data: lower(l.data),
      logIndex: qty(l.logIndex),
      transactionIndex: qty(l.transactionIndex),
      removed: l.removed,
    })),
  };
}

function normTx(t) {
  const out = {
    hash: lower(t.hash),
    type: qty(t.type),
    nonce: qty(t.nonce),
    from: lower(t.from),
    to: lower(t.to),
    value: qty(t.value),
    gas: qty(t.gas),
    gasPrice: qty(t.gasPrice),
    input: lower(t.input),
    chainId: qty(t.chainId),
    r: qty(t.r),
    s: qty(t.s),
    v: qty(t.v),
    transactionIndex: qty(t.transactionIndex),
  };
  if (BigInt(t.type) >= 1n) {
    out.accessList = (t.accessList || []).map((e) => ({ address: lower(e.address), storageKeys: e.storageKeys.map(lower) }));
    out.yParity = qty(t.yParity ?? t.v);
  }
  if (BigInt(t.type) === 2n) {
    out.maxFeePerGas = qty(t.maxFeePerGas);
    out.maxPriorityFeePerGas = qty(t.maxPriorityFeePerGas);
  }
  return out;
}

/** Builds the deterministic, pre-signed transaction sequence. */
async function buildSequence(accounts) {
  const [A, B, C, D, E] = accounts.slice(0, 5).map((a) => new Wallet(a.privateKey));
  const nonces = new Map();
  const nextNonce = (w) => {
    const n = nonces.get(w.address) ?? 0;
    nonces.set(w.address, n + 1);
    return n;
  };
  const { abi, bytecode } = openToken();
  const iface = new Interface(abi);
  const tokenNonce = 0; // A's first transaction is the deployment
  const token = getCreateAddress({ from: A.address, nonce: tokenNonce });

  const steps = [];
  const add = async (name, wallet, tx, expect) => {
    const base = { chainId: CHAIN_ID, nonce: nextNonce(wallet), value: 0n, data: '0x', ...tx };
    if (base.type === 2) Object.assign(base, { maxFeePerGas: FEE, maxPriorityFeePerGas: FEE });
    else base.gasPrice = FEE;
    const raw = await wallet.signTransaction(base);
    steps.push({ name, raw, hash: keccak256(raw), from: wallet.address, gasLimit: base.gasLimit, expect });
  };
  const call = (fn, args = []) => iface.encodeFunctionData(fn, args);

  await add('type-2 value transfer', B, { type: 2, to: R1, value: ETHER, gasLimit: 21000n }, { status: 1 });
  await add('type-1 transfer with access list', C, {
    type: 1, to: R2, value: ETHER / 2n, gasLimit: 30000n, accessList: [{ address: R1, storageKeys: [toBeHex(0, 32)] }],
  }, { status: 1 });
  await add('type-0 (EIP-155) transfer', D, { type: 0, to: R1, value: ETHER / 4n, gasLimit: 21000n }, { status: 1 });
  await add('zero-value self transfer', E, { type: 2, to: E.address, gasLimit: 21000n }, { status: 1 });
  await add('deploy OpenToken', A, {
    type: 2, gasLimit: 1_500_000n, data: concat([bytecode, AbiCoder.defaultAbiCoder().encode(['uint256'], [10n ** 24n])]),
  }, { status: 1, contractAddress: token });
  if (nonces.get(A.address) !== tokenNonce + 1) throw new Error('token nonce bookkeeping');
  await add('increment (Incremented event)', A, { type: 2, to: token, gasLimit: 100_000n, data: call('increment', [toBeHex(0xabcdefn, 32)]) }, { status: 1, logs: 1 });
  await add('token transfer (Transfer event)', A, { type: 2, to: token, gasLimit: 100_000n, data: call('transfer', [E.address, 500n]) }, { status: 1, logs: 1 });
  await add('approve via type 1 with storage keys', A, {
    type: 1, to: token, gasLimit: 100_000n, data: call('approve', [E.address, 300n]),
    accessList: [{ address: token, storageKeys: [toBeHex(6, 32), toBeHex(3, 32)] }],
  }, { status: 1, logs: 1 });
  await add('transferFrom via type 0', E, { type: 0, to: token, gasLimit: 100_000n, data: call('transferFrom', [A.address, R2, 200n]) }, { status: 1, logs: 1 });
  await add('payable deposit', C, { type: 2, to: token, gasLimit: 100_000n, value: GWEI, data: call('deposit') }, { status: 1, logs: 1 });
  await add('revert with reason string', B, { type: 2, to: token, gasLimit: 100_000n, data: call('fail') }, { status: 0 });
  await add('require() failure', E, { type: 2, to: token, gasLimit: 100_000n, data: call('transfer', [R1, 10n ** 30n]) }, { status: 0 });
  await add('custom error revert', B, { type: 0, to: token, gasLimit: 100_000n, data: call('mint', [B.address, 1n]) }, { status: 0 });
  await add('out of gas', D, { type: 2, to: token, gasLimit: 120_000n, data: call('burn', [50n]) }, { status: 0, outOfGas: true });
  await add('storage-heavy success', D, { type: 2, to: token, gasLimit: 300_000n, data: call('burn', [3n]) }, { status: 1 });
  await add('value to non-payable contract', B, { type: 2, to: token, gasLimit: 60_000n, value: 1n }, { status: 0 });
  await add('identity precompile', B, { type: 2, to: '0x0000000000000000000000000000000000000004', gasLimit: 50_000n, data: `0x${'5a'.repeat(64)}` }, { status: 1 });
  await add('sha256 precompile', C, { type: 1, to: '0x0000000000000000000000000000000000000002', gasLimit: 50_000n, data: `0x${'01'.repeat(100)}` }, { status: 1 });
  await add('calldata floor cost (EIP-7623)', C, { type: 2, to: R2, gasLimit: 100_000n, data: `0x${'ab'.repeat(1000)}` }, { status: 1, gasUsed: 61_000n });
  await add('contract creation whose constructor reverts', E, { type: 2, gasLimit: 100_000n, data: '0x60006000fd' }, { status: 0 });
  await add('second deployment from the same sender', A, { type: 0, gasLimit: 1_500_000n, data: concat([bytecode, AbiCoder.defaultAbiCoder().encode(['uint256'], [1n])]) }, { status: 1 });

  const addresses = [...[A, B, C, D, E].map((w) => w.address), R1, R2, token];
  return { steps, token, addresses, iface, extraToken: getCreateAddress({ from: A.address, nonce: nonces.get(A.address) - 1 }) };
}

describe(`differential: ${NODE_UNDER_TEST} vs anvil`, () => {
  let ref;
  let sub;
  let seq;
  const results = []; // { step, ref: {hash, receipt, tx, block} | {error}, sub: ... }

  async function submit(node, step) {
    const res = await rpc(node.rpcUrl, 'eth_sendRawTransaction', [step.raw]);
    if (res.error) return { error: res.error };
    const receipt = await waitReceipt(node.rpcUrl, res.result, 60_000);
    // anvil can serve the receipt a moment before its transaction lookup shows the block
    // (transactionIndex null); ask again until the lookup has caught up.
    let tx = await rpcResult(node.rpcUrl, 'eth_getTransactionByHash', [res.result]);
    for (let i = 0; i < 50 && (tx?.blockNumber == null || tx?.transactionIndex == null); i++) {
      await new Promise((r) => setTimeout(r, 100));
      tx = await rpcResult(node.rpcUrl, 'eth_getTransactionByHash', [res.result]);
    }
    const block = await rpcResult(node.rpcUrl, 'eth_getBlockByNumber', [receipt.blockNumber, false]);
    return { hash: res.result, receipt, tx, block };
  }

  before(async () => {
    [ref, sub] = await Promise.all([
      startNode({ backend: 'anvil', label: 'anvil-reference' }),
      startNode({ label: `${NODE_UNDER_TEST}-subject` }),
    ]);
    seq = await buildSequence(ref.accounts);
    for (const step of seq.steps) {
      const [r, s] = await Promise.all([submit(ref, step), submit(sub, step)]);
      results.push({ step, ref: r, sub: s });
    }
  });

  after(async () => {
    await Promise.all([ref?.stop(), sub?.stop()]);
  });

  test('the reference run does what each step intends', () => {
    for (const { step, ref: r } of results) {
      assert.ok(!r.error, `${step.name}: anvil rejected it: ${JSON.stringify(r.error)}`);
      assert.equal(r.hash, step.hash, `${step.name}: tx hash = keccak(raw)`);
      assert.equal(BigInt(r.receipt.status), BigInt(step.expect.status), `${step.name}: status on anvil`);
      if (step.expect.logs !== undefined) assert.equal(r.receipt.logs.length, step.expect.logs, `${step.name}: logs`);
      if (step.expect.outOfGas) assert.equal(BigInt(r.receipt.gasUsed), step.gasLimit, `${step.name}: OOG uses all gas`);
      if (step.expect.gasUsed) assert.equal(BigInt(r.receipt.gasUsed), step.expect.gasUsed, `${step.name}: gasUsed`);
      if (step.expect.contractAddress) {
        assert.equal(lower(r.receipt.contractAddress), lower(step.expect.contractAddress), `${step.name}: contract address`);
      }
    }
  });

  test('identical receipts: status, gasUsed, cumulativeGasUsed, logs, contract addresses, bloom', (t) => {
    const problems = [];
    for (const { step, ref: r, sub: s } of results) {
      if (s.error) {
        problems.push(`${step.name}: ${NODE_UNDER_TEST} rejected the transaction: ${JSON.stringify(s.error)}`);
        continue;
      }
      if (s.hash !== step.hash) problems.push(`${step.name}: returned hash ${s.hash} != keccak256(raw) ${step.hash}`);
      const a = normReceipt(s.receipt);
      const b = normReceipt(r.receipt);
      for (const k of Object.keys(b)) {
        if (!isDeepStrictEqual(a[k], b[k])) {
          problems.push(`${step.name}: receipt.${k} = ${JSON.stringify(a[k])}, anvil has ${JSON.stringify(b[k])}`);
        }
      }
    }
    assert.deepEqual(problems, [], `receipts differ from anvil in ${problems.length} place(s):\n${problems.join('\n')}`);
    const deploy = results.find((x) => x.step.name === 'deploy OpenToken');
    t.diagnostic(`anvil gasUsed for the OpenToken deployment: ${BigInt(deploy.ref.receipt.gasUsed)}`);
  });

  test('identical transactions from eth_getTransactionByHash', () => {
    for (const { step, ref: r, sub: s } of results) {
      if (s.error) continue; // reported above
      assert.deepEqual(normTx(s.tx), normTx(r.tx), `${step.name}: transaction object differs`);
    }
  });

  test('identical final balances, nonces, code and storage', async () => {
    const addrs = [...seq.addresses, seq.extraToken];
    for (const a of addrs) {
      const [rb, sb] = await Promise.all([ref, sub].map((n) => rpcResult(n.rpcUrl, 'eth_getBalance', [a, 'latest'])));
      assert.equal(BigInt(sb), BigInt(rb), `balance of ${a}`);
      const [rn, sn] = await Promise.all([ref, sub].map((n) => rpcResult(n.rpcUrl, 'eth_getTransactionCount', [a, 'latest'])));
      assert.equal(BigInt(sn), BigInt(rn), `nonce of ${a}`);
      const [rc, sc] = await Promise.all([ref, sub].map((n) => rpcResult(n.rpcUrl, 'eth_getCode', [a, 'latest'])));
      assert.equal(lower(sc), lower(rc), `code of ${a}`);
    }
    // storage: fixed slots plus the mapping entries touched above
    const coder = AbiCoder.defaultAbiCoder();
    const mapSlot = (key, slot) => keccak256(coder.encode(['address', 'uint256'], [key, slot]));
    const slots = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => toBeHex(i, 32));
    for (const a of seq.addresses) slots.push(mapSlot(a, 5));
    const [A, , , , E] = seq.addresses;
    slots.push(keccak256(coder.encode(['address', 'bytes32'], [E, mapSlot(A, 6)])));
    for (const slot of slots) {
      const [rs, ss] = await Promise.all([ref, sub].map((n) => rpcResult(n.rpcUrl, 'eth_getStorageAt', [seq.token, slot, 'latest'])));
      assert.equal(BigInt(ss), BigInt(rs), `storage ${slot} of token`);
    }
  });

  test('identical eth_call results on the final state', async () => {
    const calls = [
      ['totalSupply', []], ['counter', []], ['name', []], ['symbol', []], ['owner', []], ['contractBalance', []],
      ...seq.addresses.map((a) => ['balanceOf', [a]]),
      ['allowance', [seq.addresses[0], seq.addresses[4]]],
    ];
    for (const [fn, args] of calls) {
      const data = seq.iface.encodeFunctionData(fn, args);
      const [rr, sr] = await Promise.all([ref, sub].map((n) => rpcResult(n.rpcUrl, 'eth_call', [{ to: seq.token, data }, 'latest'])));
      assert.equal(lower(sr), lower(rr), `${fn}(${args.join(',')})`);
    }
    // a reverting call returns the same revert data
    const data = seq.iface.encodeFunctionData('fail', []);
    const [re, se] = await Promise.all([ref, sub].map((n) => rpc(n.rpcUrl, 'eth_call', [{ to: seq.token, data }, 'latest'])));
    assert.ok(re.error && se.error, 'both revert');
    assert.equal(se.error.code, re.error.code, 'revert error code (3)');
    assert.equal(lower(se.error.data), lower(re.error.data), 'revert data');
  });

  test('one block per transaction; block gas and base fee follow EIP-1559', () => {
    for (const side of ['ref', 'sub']) {
      const rs = results.filter((x) => !x[side].error).map((x) => x[side]);
      for (let i = 0; i < rs.length; i++) {
        const { block, receipt } = rs[i];
        const label = `${side === 'ref' ? 'anvil' : NODE_UNDER_TEST} tx #${i}`;
        assert.equal(block.transactions.length, 1, `${label}: one tx per block (instant mining)`);
        assert.equal(BigInt(block.gasUsed), BigInt(receipt.gasUsed), `${label}: block gasUsed`);
        assert.equal(BigInt(block.gasLimit), 30_000_000n, `${label}: block gas limit`);
        if (i > 0) {
          const parent = rs[i - 1].block;
          assert.equal(BigInt(block.number), BigInt(parent.number) + 1n, `${label}: consecutive blocks`);
          assert.equal(block.parentHash, parent.hash, `${label}: parent hash`);
          assert.equal(BigInt(block.baseFeePerGas), nextBaseFee(parent), `${label}: EIP-1559 base fee`);
        } else {
          // block 1: anvil keeps the genesis value (1 gwei); geth derives it from
          // the genesis block (0.875 gwei). Either is accepted.
          assert.equal(BigInt(block.number), 1n, `${label}: first tx lands in block 1`);
          assert.ok([GWEI, 875_000_000n].includes(BigInt(block.baseFeePerGas)), `${label}: block 1 base fee ${BigInt(block.baseFeePerGas)}`);
        }
      }
    }
  });
});

/** EIP-1559 base fee of the child of `parent` (elasticity 2, denominator 8). */
function nextBaseFee(parent) {
  const gasLimit = BigInt(parent.gasLimit);
  const gasUsed = BigInt(parent.gasUsed);
  const baseFee = BigInt(parent.baseFeePerGas);
  const target = gasLimit / 2n;
  if (gasUsed === target) return baseFee;
  if (gasUsed > target) {
    const delta = (baseFee * (gasUsed - target)) / target / 8n;
    return baseFee + (delta > 1n ? delta : 1n);
  }
  return baseFee - (baseFee * (target - gasUsed)) / target / 8n;
}
