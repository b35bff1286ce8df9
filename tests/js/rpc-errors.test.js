// Bad input over raw JSON-RPC (fetch). Assertions follow geth's behaviour;
// where anvil (the reference we validate against) differs, the geth-specific
// assertion is skipped under NODE_UNDER_TEST=anvil and what anvil 1.7.1
// actually returns is recorded next to it.
//
// geth reference (go-ethereum core/txpool, core/error.go, rpc/errors.go):
//   parse error                -32700 "parse error"
//   invalid request            -32600 "invalid request" / "empty batch"
//   unknown method             -32601 "the method foo_bar does not exist/is not available"
//   bad params                 -32602 "invalid argument 0: ..."
//   every txpool rejection     -32000 with messages:
//     "invalid sender: invalid chain id for signer: have 1 want 1612"
//     "nonce too low: next nonce N, tx nonce M"
//     "insufficient funds for gas * price + value: balance B, tx cost C, overshot O"
//     "exceeds block gas limit"
//     "intrinsic gas too low: gas G, minimum needed M"
//   undecodable raw tx         -32000 ("rlp: ...", "typed transaction too short"); anvil -32602

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Wallet, parseEther } from 'ethers';
import { startNode, CHAIN_ID, IS_ANVIL } from './harness.js';
import { GWEI, expectRpcError, postRaw, rpc, rpcResult, waitReceipt } from './lib.js';

// geth answers every txpool rejection with -32000. anvil uses -32003
// ("transaction rejected", EIP-1474) for most, -32000 for gas-limit checks.
const TX_REJECTED_CODES = IS_ANVIL ? [-32000, -32003] : [-32000];

describe('JSON-RPC bad input', () => {
  let node;
  let url;
  let sender; // ethers Wallet (offline signer)
  const SINK = '0x000000000000000000000000000000000000dEaD';

  before(async () => {
    node = await startNode();
    url = node.rpcUrl;
    sender = new Wallet(node.accounts[1].privateKey);
  });
  after(async () => {
    await node?.stop();
  });

  async function accountState(address) {
    const [nonce, balance, pending] = await Promise.all([
      rpcResult(url, 'eth_getTransactionCount', [address, 'latest']),
      rpcResult(url, 'eth_getBalance', [address, 'latest']),
      rpcResult(url, 'eth_getTransactionCount', [address, 'pending']),
    ]);
    return { nonce: BigInt(nonce), balance: BigInt(balance), pending: BigInt(pending) };
  }

  async function nextNonce() {
    return Number(BigInt(await rpcResult(url, 'eth_getTransactionCount', [sender.address, 'pending'])));
  }

  function tx1559(overrides) {
    return {
      type: 2,
      chainId: CHAIN_ID,
      to: SINK,
      value: 1n,
      gasLimit: 21000n,
      maxFeePerGas: 10n * GWEI,
      maxPriorityFeePerGas: 1n * GWEI,
      ...overrides,
    };
  }

  /** Sends a raw tx expecting rejection; checks the error and that the sender's state did not move. */
  async function expectRejected(rawTx, { what, gethSubstring, anvilSubstring, codes = TX_REJECTED_CODES }) {
    const before = await accountState(sender.address);
    const headBefore = BigInt(await rpcResult(url, 'eth_blockNumber'));
    const res = await rpc(url, 'eth_sendRawTransaction', [rawTx]);
    const err = expectRpcError(res, what);
    assert.ok(codes.includes(err.code), `${what}: code ${err.code} not in ${codes} (message: ${err.message})`);
    if (!IS_ANVIL && gethSubstring) {
      assert.ok(err.message.includes(gethSubstring), `${what}: message "${err.message}" lacks geth's "${gethSubstring}"`);
    }
    if (IS_ANVIL && anvilSubstring) {
      assert.ok(err.message.includes(anvilSubstring), `${what}: anvil message changed: "${err.message}"`);
    }
    // nothing changed: no block was produced for it, nonce and balance are untouched
    const after = await accountState(sender.address);
    assert.deepEqual(after, before, `${what}: sender state changed`);
    assert.equal(BigInt(await rpcResult(url, 'eth_blockNumber')), headBefore, `${what}: a block was produced`);
    return err;
  }

  test('malformed JSON -> -32700 parse error', async () => {
    for (const body of ['{"jsonrpc":"2.0","id":1,"method":"eth_chainId"', 'not json at all', '{"jsonrpc":"2.0",,}']) {
      const { json, text } = await postRaw(url, body);
      assert.ok(json, `response to malformed JSON must itself be JSON, got: ${text}`);
      const err = expectRpcError(json, `malformed body ${body}`);
      assert.equal(json.id, null);
      if (IS_ANVIL) {
        // anvil 1.7.1: {"code":-32600,"message":"Invalid request"} (no -32700)
        assert.equal(err.code, -32600);
      } else {
        assert.equal(err.code, -32700, `geth answers -32700 "parse error", got ${JSON.stringify(err)}`);
      }
    }
  });

  test('unknown method -> -32601', async () => {
    const res = await rpc(url, 'foo_bar', []);
    const err = expectRpcError(res, 'unknown method');
    assert.equal(err.code, -32601);
    // geth: "the method foo_bar does not exist/is not available"; anvil: "Method not found"
    assert.equal(res.id !== undefined && res.id !== null, true, 'error response echoes the id');
  });

  test('invalid request object -> -32600', async () => {
    // geth: -32600 "invalid request"; anvil: -32600 "Invalid request"
    const { json } = await postRaw(url, '{"jsonrpc":"2.0","id":1}');
    assert.equal(expectRpcError(json, 'request without method').code, -32600);
  });

  test('batch requests: mixed success and error, answered in an array', async () => {
    const body = JSON.stringify([
      { jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] },
      { jsonrpc: '2.0', id: 2, method: 'foo_bar', params: [] },
      { jsonrpc: '2.0', id: 3, method: 'eth_blockNumber', params: [] },
    ]);
    const { json } = await postRaw(url, body);
    assert.ok(Array.isArray(json), `batch answer must be an array: ${JSON.stringify(json)}`);
    assert.equal(json.length, 3);
    const byId = new Map(json.map((r) => [r.id, r]));
    assert.equal(BigInt(byId.get(1).result), BigInt(CHAIN_ID));
    assert.equal(byId.get(2).error.code, -32601);
    assert.match(byId.get(3).result, /^0x[0-9a-f]+$/);
    // empty batch: geth -32600 "empty batch"; anvil -32600 "Invalid request"
    const empty = await postRaw(url, '[]');
    assert.equal(expectRpcError(empty.json, 'empty batch').code, -32600);
  });

  test('invalid params -> -32602', async () => {
    // geth: -32602 "invalid argument 0: hex string has length 2, want 40 for common.Address"
    // anvil: -32602 "invalid string length"
    const err = expectRpcError(await rpc(url, 'eth_getBalance', ['0x12', 'latest']), 'short address');
    assert.equal(err.code, -32602);
    // non-hex raw tx: geth -32602 "invalid argument 0: json: cannot unmarshal invalid hex string ...";
    // anvil -32602 'invalid value: string "zz", expected a valid hex string'
    const err2 = expectRpcError(await rpc(url, 'eth_sendRawTransaction', ['zz']), 'non-hex raw tx');
    assert.equal(err2.code, -32602);
  });

  test('raw tx with the wrong chain id is rejected', async () => {
    const signed = await sender.signTransaction(tx1559({ chainId: 1, nonce: await nextNonce() }));
    const err = await expectRejected(signed, {
      what: 'wrong chain id',
      // geth: "invalid sender: invalid chain id for signer: have 1 want 1612"
      // anvil: -32003 "invalid chain id for signer"
      gethSubstring: 'invalid chain id',
      anvilSubstring: 'invalid chain id for signer',
    });
    assert.match(err.message, /chain id/i);
    // legacy EIP-155 tx signed for another chain
    const legacy = await sender.signTransaction({ type: 0, chainId: 5, to: SINK, value: 1n, gasLimit: 21000n, gasPrice: 10n * GWEI, nonce: await nextNonce() });
    if (IS_ANVIL) {
      // anvil 1.7.1 deviates: it answers with a tx hash for a legacy EIP-155 tx
      // signed for chain 5, then silently drops it (never mined, not returned by
      // eth_getTransactionByHash). geth rejects it like the typed case above.
      const before = await accountState(sender.address);
      const res = await rpc(url, 'eth_sendRawTransaction', [legacy]);
      await new Promise((r) => setTimeout(r, 300));
      if (res.result) assert.equal(await rpcResult(url, 'eth_getTransactionReceipt', [res.result]), null);
      assert.deepEqual(await accountState(sender.address), before);
    } else {
      await expectRejected(legacy, { what: 'wrong chain id (legacy)', gethSubstring: 'invalid chain id' });
    }
  });

  test('replayed nonce -> "nonce too low"', async () => {
    const nonce = await nextNonce();
    const first = await sender.signTransaction(tx1559({ nonce, value: 2n }));
    const hash = await rpcResult(url, 'eth_sendRawTransaction', [first]);
    const receipt = await waitReceipt(url, hash);
    assert.equal(receipt.status, '0x1');

    // exact replay of the mined transaction
    // geth: -32000 "nonce too low: next nonce N, tx nonce M" (or "already known" while pooled)
    // anvil: -32003 "nonce too low"
    await expectRejected(first, { what: 'exact replay', gethSubstring: 'nonce too low', anvilSubstring: 'nonce too low' });
    // a different transaction reusing the consumed nonce
    const other = await sender.signTransaction(tx1559({ nonce, value: 3n }));
    await expectRejected(other, { what: 'reused nonce', gethSubstring: 'nonce too low', anvilSubstring: 'nonce too low' });
  });

  test('insufficient funds -> "insufficient funds for gas * price + value"', async () => {
    const signed = await sender.signTransaction(tx1559({ nonce: await nextNonce(), value: parseEther('20000') }));
    const err = await expectRejected(signed, {
      what: 'insufficient funds',
      // geth: "insufficient funds for gas * price + value: balance B, tx cost C, overshot O"
      // anvil: -32003 "Insufficient funds for gas * price + value" (capital I)
      gethSubstring: 'insufficient funds for gas * price + value',
      anvilSubstring: 'Insufficient funds for gas * price + value',
    });
    assert.ok(err.message.toLowerCase().includes('insufficient funds for gas * price + value'));
    // also: an unfunded fresh key paying only for gas
    const poor = Wallet.createRandom();
    const raw = await poor.signTransaction(tx1559({ nonce: 0, value: 0n }));
    const res = await rpc(url, 'eth_sendRawTransaction', [raw]);
    const err2 = expectRpcError(res, 'unfunded sender');
    assert.ok(err2.message.toLowerCase().includes('insufficient funds'), err2.message);
    assert.equal(BigInt(await rpcResult(url, 'eth_getTransactionCount', [poor.address, 'latest'])), 0n);
  });

  test('gas limit above the block gas limit -> "exceeds block gas limit"', async () => {
    const signed = await sender.signTransaction(tx1559({ nonce: await nextNonce(), gasLimit: 30_000_001n }));
    await expectRejected(signed, {
      what: 'gas above block limit',
      // geth: -32000 "exceeds block gas limit"
      // anvil: -32000 "intrinsic gas too high -- tx.gas_limit > env.block.gas_limit"
      gethSubstring: 'exceeds block gas limit',
      anvilSubstring: 'tx.gas_limit > env.block.gas_limit',
    });
  });

  test('gas limit below intrinsic gas -> "intrinsic gas too low"', async () => {
    const signed = await sender.signTransaction(tx1559({ nonce: await nextNonce(), gasLimit: 20_999n }));
    // geth: -32000 "intrinsic gas too low: gas 20999, minimum needed 21000"; anvil: -32000 "intrinsic gas too low"
    await expectRejected(signed, { what: 'intrinsic gas', gethSubstring: 'intrinsic gas too low', anvilSubstring: 'intrinsic gas too low' });
  });

  test('garbage RLP -> JSON-RPC error (-32000 or -32602), nothing mined', async () => {
    const cases = [
      '0xdeadbeef', // not RLP at all
      '0xf86b80843b9aca00', // truncated legacy list
      '0x02c0', // typed tx with an empty body
      '0x7f01', // unknown tx type
      `0x02f86f82064c018084773594008252089400000000000000000000000000000000000000dead0180c080a0${'00'.repeat(32)}a0${'00'.repeat(32)}`, // r = s = 0
    ];
    for (const raw of cases) {
      // geth: -32000 ("rlp: ...", "typed transaction too short", "transaction type not supported", "invalid transaction v, r, s values")
      // anvil: -32602 "Failed to decode transaction"
      await expectRejected(raw, { what: `garbage ${raw.slice(0, 20)}`, codes: [-32000, -32602] });
    }
    // empty payload: geth -32000 "typed transaction too short"; anvil -32602 "Empty transaction data"
    await expectRejected('0x', { what: 'empty raw tx', codes: [-32000, -32602] });
  });

  test('the node still works normally after all the bad input', async () => {
    const nonce = await nextNonce();
    const before = await accountState(sender.address);
    const signed = await sender.signTransaction(tx1559({ nonce, value: 5n }));
    const hash = await rpcResult(url, 'eth_sendRawTransaction', [signed]);
    const receipt = await waitReceipt(url, hash);
    assert.equal(receipt.status, '0x1');
    const after = await accountState(sender.address);
    assert.equal(after.nonce, before.nonce + 1n);
    assert.equal(after.balance, before.balance - 5n - 21000n * BigInt(receipt.effectiveGasPrice));
  });
});
