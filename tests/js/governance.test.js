// Staking and Governance precompiles through `cast` and the `openledger` CLI: several accounts
// stake, one proposes a new settlement fee split, votes pass it, the timelock elapses (blocks
// advance), the chain executes it at the next block, the new split is read back from ProtocolParams, and the next
// inference settlement pays contributors and curators by it.
// OpenLedger only.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { castAgainst } from './lib.js';
import { foundryBin, openledgerBin, startNode, IS_ANVIL } from './harness.js';

const execFileP = promisify(execFile);
const CAST = foundryBin('cast');
const PARAMS = '0x0000000000000000000000000000000000000f01';
const STAKING = '0x0000000000000000000000000000000000000f04';
const GOVERNANCE = '0x0000000000000000000000000000000000000f06';
const DATANETS = '0x0000000000000000000000000000000000000f02';
const MODELS = '0x0000000000000000000000000000000000000f03';
const INFERENCE = '0x0000000000000000000000000000000000000f05';
const SETTLEMENT = '0x0000000000000000000000000000000000000f07';
const SETTLE = 'settle((bytes32,address,uint64,uint64,uint64,uint256,bytes32,bytes32,(uint64,uint32)[])[])';
const OPEN = 10n ** 18n;
const HASH = (byte) => `0x${byte.repeat(32)}`;
const VOTING_PERIOD = 10;
const TIMELOCK = 2;
const PROPOSE = 'propose(string,string[],uint256[],address[],uint256[],address[])';
const SPLIT_NAMES = '["settlement.contributors_bps","settlement.validators_bps","settlement.model_owner_bps","settlement.treasury_bps"]';
const GET_PROPOSAL = 'getProposal(uint64)(address,string,uint8,uint64,uint64,uint64,uint256,uint256,uint256,uint256,uint256,uint256)';

describe('Staking and Governance via cast and the CLI', { skip: IS_ANVIL && 'OpenLedger modules only' }, () => {
  let node;
  const cast = (...args) => castAgainst(node, CAST)(...args);
  const castFails = async (...args) => {
    try {
      await cast(...args);
    } catch (e) {
      return `${e.stdout}\n${e.stderr}`;
    }
    assert.fail(`expected cast ${args.join(' ')} to fail`);
  };
  const ol = async (...args) => {
    const { stdout } = await execFileP(openledgerBin(), [...args, '--rpc', node.rpcUrl], { timeout: 60_000 });
    return stdout;
  };
  const olFails = async (...args) => {
    try {
      await ol(...args);
    } catch (e) {
      return `${e.stdout}\n${e.stderr}`;
    }
    assert.fail(`expected openledger ${args.join(' ')} to fail`);
  };
  const blockNumber = async () => Number(await cast('block-number'));
  /** Mines blocks with zero-value self-transfers until the head reaches `target`. */
  const mineUntil = async (target, account) => {
    while ((await blockNumber()) < target) {
      await cast('send', '--private-key', account.privateKey, account.address, '--value', '0');
    }
  };

  before(async () => {
    node = await startNode({
      args: [
        '--param', `governance.voting_period_blocks=${VOTING_PERIOD}`,
        '--param', `governance.timelock_blocks=${TIMELOCK}`,
        '--param', 'governance.proposal_deposit=1000000000000000000',
      ],
    });
  });
  after(async () => { await node?.stop(); });

  /** A datanet with one accepted row (contributor `f`, curator `g`), model 1 trained on it at
   * 1 OPEN per 1,000 tokens (owner `e`), and `h` funding inference with operator `op`. */
  async function paidModel(e, f, g, h, op) {
    await cast('send', '--private-key', e.privateKey, '--value', '10ether', DATANETS,
      'createDatanet(string,bytes32,string,uint8,bool,bool,uint16,address[])',
      'facts', HASH('11'), 'CC-BY-4.0', '1', 'false', 'false', '1', `[${g.address}]`);
    await cast('send', '--private-key', f.privateKey, DATANETS, 'contribute(uint64,bytes32,uint64,uint64)', '1', HASH('a1'), '10', '100');
    await cast('send', '--private-key', g.privateKey, DATANETS, 'review(uint64,bool,uint16)', '1', 'true', '0');
    await cast('send', '--private-key', e.privateKey, DATANETS, 'publishSnapshot(uint64,bytes32,uint64,uint64)', '1', HASH('5e'), '10', '0');
    await cast('send', '--private-key', e.privateKey, MODELS, 'registerBaseModel(bytes32,string)', HASH('ba'), 'base');
    await cast('send', '--private-key', e.privateKey, MODELS,
      'publishModel(string,bytes32,bytes32,bytes32,uint64[],bytes32,uint64,uint64,uint256)',
      'facts-qa', HASH('ba'), HASH('ad'), HASH('3a'), '[1]', HASH('4b'), '1', '1', `${OPEN}`);
    await cast('send', '--private-key', h.privateKey, '--value', '10ether', INFERENCE, 'deposit(address)', op.address);
  }
  /** Settles one request of 1,000 tokens (a fee of 1 OPEN), all attributed to row 1. */
  const settleOne = (op, h, request) => cast('send', '--private-key', op.privateKey, SETTLEMENT, SETTLE,
    `[(${HASH(request)},${h.address},1,250,750,${OPEN},${HASH('ee')},${HASH('aa')},[(1,1000000)])]`);
  const earned = async (who) => BigInt((await cast('call', SETTLEMENT, 'earnings(address)(uint256)', who.address)).split(' ')[0]);

  test('stake, propose a new fee split, vote, wait out the timelock, execute, settle by it', async () => {
    const [a, b, c, d, e, f, g, h, op] = node.accounts;
    await paidModel(e, f, g, h, op);
    // Under the genesis split (70 / 10 / 15 / 5) a 1 OPEN fee pays the row's contributor 0.7
    // and its curator 0.1.
    await settleOne(op, h, '01');
    assert.equal(await earned(f), 7n * OPEN / 10n);
    assert.equal(await earned(g), OPEN / 10n);
    assert.equal(await earned(e), 15n * OPEN / 100n);
    // Replaying the record is refused.
    const replay = await castFails('send', '--private-key', op.privateKey, SETTLEMENT, SETTLE,
      `[(${HASH('01')},${h.address},1,250,750,${OPEN},${HASH('ee')},${HASH('aa')},[(1,1000000)])]`);
    assert.match(replay, /AlreadySettled|execution reverted/);

    // Three accounts stake with cast, a fourth with the CLI.
    await cast('send', '--private-key', a.privateKey, '--value', '100ether', STAKING, 'stake()');
    await cast('send', '--private-key', b.privateKey, '--value', '200ether', STAKING, 'stake()');
    await cast('send', '--private-key', c.privateKey, '--value', '300ether', STAKING, 'stake()');
    const staked = await ol('stake', 'add', '50', '--private-key', d.privateKey);
    assert.match(staked, /staked 50(\.0)? OPEN/);
    assert.equal(await cast('call', STAKING, 'votingPower(address)(uint256)', b.address), '200000000000000000000 [2e20]');
    assert.match(await ol('stake', 'show', d.address), /staked\s+50(\.0)? OPEN/);
    // Unstaking more than staked is refused, readably, before anything is sent.
    assert.match(await olFails('stake', 'unstake', '51', '--private-key', d.privateKey), /cannot unstake 51(\.0)? OPEN/);
    assert.match(await ol('stake', 'unstake', '10', '--private-key', d.privateKey), /unbonding 10(\.0)? OPEN/);

    // A split that does not sum to 10000 bps, or a zero voting period, never becomes a proposal.
    let out = await castFails('send', '--private-key', a.privateKey, '--value', '1ether', GOVERNANCE, PROPOSE,
      'bad split', SPLIT_NAMES, '[6500,2000,1500,500]', '[]', '[]', '[]');
    assert.match(out, /FeeSplitNotWhole|execution reverted/);
    out = await olFails('gov', 'propose', '--description', 'bad split', '--private-key', a.privateKey,
      '--param', 'settlement.contributors_bps=6500', '--param', 'settlement.validators_bps=2000');
    assert.match(out, /sum to 10500 bps; it must sum to 10000/);
    out = await olFails('gov', 'propose', '--description', 'no time to vote', '--private-key', a.privateKey,
      '--param', 'governance.voting_period_blocks=0');
    assert.match(out, /governance\.voting_period_blocks = 0 is out of range \(10 to 10000000\)/);
    // A fraud removal must name accepted contributions.
    out = await olFails('gov', 'propose', '--description', 'no such row', '--private-key', a.privateKey, '--remove', '99');
    assert.match(out, /contribution 99 is not an accepted contribution/);
    assert.equal(await cast('call', GOVERNANCE, 'proposalCount()(uint64)'), '0');

    // The proposal: 60% contributors, 20% curators/validators, 15% model owner, 5% treasury.
    await cast('send', '--private-key', a.privateKey, '--value', '1ether', GOVERNANCE, PROPOSE,
      'settlement: more for curators', SPLIT_NAMES, '[6000,2000,1500,500]', '[]', '[]', '[]');
    assert.equal(await cast('call', GOVERNANCE, 'proposalCount()(uint64)'), '1');
    // Staking more after the snapshot adds no weight.
    await cast('send', '--private-key', b.privateKey, '--value', '1000ether', STAKING, 'stake()');

    await cast('send', '--private-key', a.privateKey, GOVERNANCE, 'vote(uint64,uint8)', '1', '0');
    await cast('send', '--private-key', b.privateKey, GOVERNANCE, 'vote(uint64,uint8)', '1', '1');
    assert.match(await ol('gov', 'vote', '1', 'for', '--private-key', c.privateKey), /voted for on proposal 1 with 300(\.0)? OPEN/);
    // a changes its mind; voting the same way twice is refused.
    assert.match(await ol('gov', 'vote', '1', 'for', '--private-key', a.privateKey), /changed vote to for/);
    assert.match(await olFails('gov', 'vote', '1', 'for', '--private-key', a.privateKey), /already voted for on proposal 1/);
    // Live tally: 100 + 200 + 300 for; b's later 1000 OPEN does not count.
    const shown = await ol('gov', 'show', '1', '--voter', b.address);
    assert.match(shown, /state\s+active/);
    assert.match(shown, /for\s+600(\.0)?\n/);
    assert.match(shown, /set\s+settlement\.contributors_bps = 6000/);
    assert.match(shown, /voted for with 200(\.0)? OPEN/);
    // …and over HTTP, live.
    const overHttp = await (await fetch(`${node.apiUrl}/v1/governance/proposals/1`)).json();
    assert.equal(overHttp.state, 'active');
    assert.equal(overHttp.tally.for, '600000000000000000000');
    assert.deepEqual(overHttp.actions.params[0], { name: 'settlement.contributors_bps', value: '6000' });
    const listed = await (await fetch(`${node.apiUrl}/v1/governance/proposals`)).json();
    assert.equal(listed.data.length, 1);
    assert.equal((await fetch(`${node.apiUrl}/v1/governance/proposals/9`)).status, 404);
    const tally = await cast('call', GOVERNANCE, GET_PROPOSAL, '1');
    assert.ok(tally.includes('600000000000000000000 [6e20]'), tally);

    // Too early: the CLI decodes why.
    assert.match(await olFails('gov', 'execute', '1', '--private-key', d.privateKey), /proposal 1 is active/);
    const fields = tally.split('\n');
    const endBlock = Number(fields[4]);
    const executableBlock = Number(fields[5]);
    assert.equal(executableBlock, endBlock + TIMELOCK + 1);
    await mineUntil(endBlock + 1, d);
    assert.match(await olFails('gov', 'vote', '1', 'against', '--private-key', b.privateKey), /voting on proposal 1 ended/);
    assert.match(await ol('gov', 'list'), /1\s+queued/);
    await mineUntil(executableBlock - 1, d); // the next block is the first that may execute
    assert.equal(await cast('call', PARAMS, 'get(string)(uint256)', 'settlement.contributors_bps'), '7000');

    // Nobody needs to call execute: the chain runs it at the start of the next block.
    await mineUntil(executableBlock, d);
    const split = {};
    for (const name of ['contributors', 'validators', 'model_owner', 'treasury']) {
      split[name] = await cast('call', PARAMS, 'get(string)(uint256)', `settlement.${name}_bps`);
    }
    assert.deepEqual(split, { contributors: '6000', validators: '2000', model_owner: '1500', treasury: '500' });
    assert.match(await ol('gov', 'show', '1'), /state\s+executed/);
    assert.match(await ol('gov', 'params'), /settlement\.contributors_bps\s+6000/);
    const params = await (await fetch(`${node.apiUrl}/v1/governance/params`)).json();
    assert.equal(params['settlement.validators_bps'], '2000');
    // Executing it by hand now is refused, readably.
    out = await castFails('send', '--private-key', d.privateKey, GOVERNANCE, 'execute(uint64)', '1');
    assert.match(out, /NotExecutable|execution reverted/);
    assert.match(await olFails('gov', 'execute', '1', '--private-key', d.privateKey), /proposal 1 is executed/);
    // The deposit went back to the proposer: governance holds nothing.
    assert.equal(await cast('balance', GOVERNANCE), '0');

    // The next settlement pays by the new split: 0.6 more to the contributor, 0.2 to the curator.
    await settleOne(op, h, '02');
    assert.equal(await earned(f), 7n * OPEN / 10n + 6n * OPEN / 10n);
    assert.equal(await earned(g), OPEN / 10n + 2n * OPEN / 10n);
    assert.match(await ol('earnings', 'show', f.address, '--datanet', '1'), /earned\s+1\.3 OPEN[\s\S]*from datanet 1: 1\.3 OPEN/);
    // The contributor claims; claiming twice is refused readably.
    assert.match(await ol('earnings', 'claim', '--private-key', f.privateKey), /claimed 1\.3 OPEN/);
    assert.match(await olFails('earnings', 'claim', '--private-key', f.privateKey), /nothing to claim/);
    // The payer's deposit paid both fees.
    assert.match(await ol('inference', 'show', h.address, '--api', 'http://127.0.0.1:9'), /deposit\s+8(\.0)? OPEN/);
  });
});
