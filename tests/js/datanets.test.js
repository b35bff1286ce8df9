// The Datanets precompile driven by `cast send` / `cast call`, as any EVM wallet would.
// OpenLedger only (anvil has no OpenLedger modules).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { foundryBin, startNode, IS_ANVIL } from './harness.js';
import { ETHER, castAgainst, rpcResult } from './lib.js';

const CAST = foundryBin('cast');
const DATANETS = '0x0000000000000000000000000000000000000f02';
const TREASURY = '0x0000000000000000000000000000000000000f00';

describe('Datanets precompile via cast', { skip: IS_ANVIL && 'OpenLedger modules only' }, () => {
  let node;
  const cast = (...args) => castAgainst(node, CAST)(...args);

  before(async () => {
    node = await startNode();
  });
  after(async () => {
    await node?.stop();
  });

  test('create, contribute, review and snapshot a datanet with cast send', async () => {
    const [owner, alice, curator] = node.accounts;
    const treasuryBefore = BigInt(await rpcResult(node.rpcUrl, 'eth_getBalance', [TREASURY, 'latest']));
    await cast('send', '--private-key', owner.privateKey, '--value', '10ether', DATANETS,
      'createDatanet(string,bytes32,string,uint8,bool,bool,uint16,address[])',
      'medical-qa', '0x' + '11'.repeat(32), 'CC-BY-4.0', '1', 'false', 'false', '1', `[${curator.address}]`);
    const treasuryAfter = BigInt(await rpcResult(node.rpcUrl, 'eth_getBalance', [TREASURY, 'latest']));
    assert.ok(treasuryAfter - treasuryBefore >= 10n * ETHER, 'creation fee paid to the treasury');

    const info = await cast('call', DATANETS,
      'getDatanet(uint64)(address,string,bytes32,string,uint8,bool,bool,uint16,uint32,bool)', '1');
    assert.match(info, /medical-qa/);
    assert.match(info, /CC-BY-4\.0/);
    assert.ok(info.toLowerCase().includes(owner.address.toLowerCase()));

    await cast('send', '--private-key', alice.privateKey, DATANETS,
      'contribute(uint64,bytes32,uint64,uint64)', '1', '0x' + 'ab'.repeat(32), '250', '100000');
    await cast('send', '--private-key', curator.privateKey, DATANETS, 'review(uint64,bool,uint16)', '1', 'true', '0');
    const contribution = await cast('call', DATANETS,
      'getContribution(uint64)(uint64,address,bytes32,uint64,uint64,uint8,uint16,uint16)', '1');
    const fields = contribution.split('\n').map((l) => l.trim());
    assert.equal(fields[1].toLowerCase(), alice.address.toLowerCase());
    assert.equal(fields[5], '1', 'accepted at a quorum of one');

    await cast('send', '--private-key', owner.privateKey, DATANETS,
      'publishSnapshot(uint64,bytes32,uint64,uint64)', '1', '0x' + '5e'.repeat(32), '250', '0');
    const snapshot = await cast('call', DATANETS, 'getSnapshot(uint64)(uint64,bytes32,uint64,uint64,uint64)', '1');
    assert.ok(snapshot.includes('0x' + '5e'.repeat(32)));

    // Events are there for indexers.
    const logs = await rpcResult(node.rpcUrl, 'eth_getLogs', [{ address: DATANETS, fromBlock: '0x0', toBlock: 'latest' }]);
    assert.ok(logs.length >= 5, `expected DatanetCreated, CuratorSet, Contributed, Reviewed, ContributionAccepted, SnapshotPublished; got ${logs.length}`);
  });

  test('a review by someone who is not a curator is reverted with NotCurator', async () => {
    const [, , , stranger] = node.accounts;
    await assert.rejects(
      cast('send', '--private-key', stranger.privateKey, DATANETS, 'review(uint64,bool,uint16)', '1', 'true', '0'),
      /revert|NotCurator|0x/i,
    );
  });
});
