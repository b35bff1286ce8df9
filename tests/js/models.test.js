// The Models precompile through `cast`: register a base model, publish a fine-tune citing a
// datanet snapshot, read back its provenance. OpenLedger only.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { castAgainst } from './lib.js';
import { foundryBin, startNode, IS_ANVIL } from './harness.js';

const CAST = foundryBin('cast');
const DATANETS = '0x0000000000000000000000000000000000000f02';
const MODELS = '0x0000000000000000000000000000000000000f03';
const BASE = '0x' + 'ba'.repeat(32);
const ADAPTER = '0x' + 'ad'.repeat(32);

describe('Models precompile via cast', { skip: IS_ANVIL && 'OpenLedger modules only' }, () => {
  let node;
  const cast = (...args) => castAgainst(node, CAST)(...args);
  const castFails = async (...args) => {
    try {
      await cast(...args);
    } catch (e) {
      return `${e.stdout}\n${e.stderr}`;
    }
    assert.fail(`expected ${args.join(' ')} to fail`);
  };

  before(async () => { node = await startNode(); });
  after(async () => { await node?.stop(); });

  test('register a base, publish a fine-tune on a snapshot, read its provenance', async () => {
    const [owner, trainer] = node.accounts;
    // A datanet with one accepted contribution and a snapshot.
    await cast('send', '--private-key', owner.privateKey, '--value', '10ether', DATANETS,
      'createDatanet(string,bytes32,string,uint8,bool,bool,uint16,address[])',
      'legal', '0x' + '11'.repeat(32), 'CC-BY-4.0', '0', 'false', 'false', '1', '[]');
    await cast('send', '--private-key', owner.privateKey, DATANETS, 'contribute(uint64,bytes32,uint64,uint64)', '1', '0x' + '22'.repeat(32), '5', '50');
    await cast('send', '--private-key', owner.privateKey, DATANETS, 'review(uint64,bool,uint16)', '1', 'true', '0');
    await cast('send', '--private-key', owner.privateKey, DATANETS, 'publishSnapshot(uint64,bytes32,uint64,uint64)', '1', '0x' + '5e'.repeat(32), '5', '0');

    const publish = ['publishModel(string,bytes32,bytes32,bytes32,uint64[],bytes32,uint64,uint64,uint256)',
      'legal-lora', BASE, ADAPTER, '0x' + '3a'.repeat(32), '[1]', '0x' + '4b'.repeat(32), '1234', '3435', '10000000000000000'];
    // The base must be registered first; the error names it.
    const out = await castFails('send', '--private-key', trainer.privateKey, MODELS, ...publish);
    assert.match(out, /UnknownBaseModel|execution reverted/);

    await cast('send', '--private-key', owner.privateKey, MODELS, 'registerBaseModel(bytes32,string)', BASE, 'smollm2-135m-instruct');
    await cast('send', '--private-key', trainer.privateKey, MODELS, ...publish);
    const model = await cast('call', MODELS,
      'getModel(uint64)(address,string,bytes32,bytes32,bytes32,bytes32,uint64,uint64,uint256,bool,uint64)', '1');
    assert.ok(model.includes(trainer.address), model);
    assert.ok(model.includes('"legal-lora"'), model);
    assert.ok(model.includes(ADAPTER), model);
    const snaps = await cast('call', MODELS, 'modelSnapshots(uint64)(uint64[],bytes32[])', '1');
    assert.ok(snaps.includes('0x' + '5e'.repeat(32)), snaps);
    assert.equal(await cast('call', MODELS, 'modelByAdapter(bytes32)(uint64)', ADAPTER), '1');
  });
});
