/**
 * decide() for reports sent to a feedback address without a token (docs/adr/020-sent-message-index.md):
 * the sent-message lookup is an input; only a recipient of the message it names is ever taken.
 */
import { feedbackCfg, KEY, NOW, QID } from '../helpers/feedback-fixture.js';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  decide,
  lookupKey,
  redacted,
  type SentLookup,
  type Target,
} from '../../relay/src/feedback/decide.js';
import { makeToken } from '../../relay/src/feedback/token.js';
import type { Report } from '../../relay/src/feedback/report.js';

const cfg = feedbackCfg({ feedbackAddress: 'fbl@globex.test' });
const FBL: Target = { kind: 'feedback', tenant: 'acme' };

function arf(
  recipients: string[],
  to: string[],
  extra: { messageId?: string; returnPath?: string } = {},
): Report {
  return {
    kind: 'arf',
    feedbackType: 'abuse',
    reporter: 'fbl.mail.example',
    recipients,
    original: { to, ...('messageId' in extra ? {} : { messageId: '<Abc@acme.test>' }), ...extra },
  };
}
const sent = (recipients: string[], o: Partial<Extract<SentLookup, { found: true }>> = {}): SentLookup => ({
  found: true,
  tenant: 'acme',
  queueId: QID,
  recipients,
  count: recipients.length,
  ...o,
});

describe('decide: reports to a feedback address, through the sent-message index', () => {
  it('asks for a lookup only for a feedback address without a token, by the normalized Message-ID', () => {
    assert.equal(lookupKey(cfg, arf(['bob@dest.test'], []), FBL, NOW), 'abc@acme.test');
    assert.equal(lookupKey(cfg, arf([], [], { messageId: undefined }), FBL, NOW), undefined);
    const tok = `bounce+${makeToken(KEY, { tenant: 'acme', queueId: QID, recipient: 'bob@dest.test' }, NOW)}@b.acme.test`;
    assert.equal(lookupKey(cfg, arf([], [], { returnPath: tok }), FBL, NOW), undefined, 'the token does');
    const token: Target = { kind: 'token', tenant: 'acme', queueId: QID, recipientTag: Buffer.alloc(8) };
    assert.equal(lookupKey(cfg, arf([], []), token, NOW), undefined);
    assert.equal(
      lookupKey(cfg, { kind: 'unknown', original: { to: [], messageId: '<a@b>' } }, FBL, NOW),
      undefined,
    );
  });

  it('a match of the same tenant: the named recipient of the message, with its queue id', () => {
    const d = decide(cfg, arf(['carol@dest.test'], []), FBL, NOW, sent(['bob@dest.test', 'carol@dest.test']));
    assert.deepEqual(d, {
      result: 'complaint',
      tenant: 'acme',
      queueId: QID,
      recipient: 'carol@dest.test',
      feedbackType: 'abuse',
      reporter: 'fbl.mail.example',
    });
  });

  it('a recipient the report names that the message did not have: unmatched, never suppressed', () => {
    const d = decide(cfg, arf(['mallory@dest.test'], []), FBL, NOW, sent(['bob@dest.test']));
    assert.deepEqual(d, { result: 'unmatched', tenant: 'acme', reason: 'no recipient of the message' });
  });

  it('a redacted or missing recipient: the only recipient of a one-recipient message', () => {
    for (const r of [arf([], []), arf([], ['redacted@webmail.example']), arf(['XXXX@webmail.example'], [])]) {
      const d = decide(cfg, r, FBL, NOW, sent(['bob@dest.test']));
      assert.equal(d.result, 'complaint');
      assert.equal(d.result === 'complaint' && d.recipient, 'bob@dest.test');
    }
    // two recipients: which one complained cannot be told
    const two = decide(cfg, arf([], []), FBL, NOW, sent(['bob@dest.test', 'carol@dest.test']));
    assert.equal(two.result, 'unmatched');
    // the first 100 recipients are remembered: a message with more is not a one-recipient message
    const many = decide(cfg, arf([], []), FBL, NOW, sent(['bob@dest.test'], { count: 101 }));
    assert.equal(many.result, 'unmatched');
  });

  it('a message of another tenant, no match, no lookup, no Message-ID: unmatched with the reason', () => {
    assert.deepEqual(
      decide(cfg, arf(['bob@dest.test'], []), FBL, NOW, sent(['bob@dest.test'], { tenant: 'globex' })),
      { result: 'unmatched', tenant: 'acme', reason: 'the Message-ID names a message of another tenant' },
    );
    assert.deepEqual(
      decide(cfg, arf(['bob@dest.test'], []), FBL, NOW, { found: false, reason: 'no sent message' }),
      { result: 'unmatched', tenant: 'acme', reason: 'no token; no sent message' },
    );
    assert.equal(decide(cfg, arf(['bob@dest.test'], []), FBL, NOW).result, 'unmatched');
    assert.deepEqual(decide(cfg, arf(['bob@dest.test'], [], { messageId: undefined }), FBL, NOW), {
      result: 'unmatched',
      tenant: 'acme',
      reason: 'no token and no Message-ID',
    });
  });

  it('a token in the returned Return-Path wins over the lookup; one of another tenant is unmatched', () => {
    const rp = `bounce+${makeToken(KEY, { tenant: 'acme', queueId: QID, recipient: 'dave@dest.test' }, NOW)}@b.acme.test`;
    const d = decide(cfg, arf(['dave@dest.test'], [], { returnPath: rp }), FBL, NOW);
    assert.equal(d.result, 'complaint');
    assert.equal(d.result === 'complaint' && d.queueId, QID);
    const globexFbl: Target = { kind: 'feedback', tenant: 'globex' };
    assert.deepEqual(decide(cfg, arf(['dave@dest.test'], [], { returnPath: rp }), globexFbl, NOW), {
      result: 'unmatched',
      tenant: 'globex',
      reason: 'token of another tenant',
    });
  });

  it('a DSN to the feedback address: the recipient of the message it names, a hard bounce', () => {
    const dsn: Report = {
      kind: 'dsn',
      recipients: [{ recipient: 'bob@dest.test', action: 'failed', status: '5.1.1' }],
      original: { to: ['bob@dest.test'], messageId: '<abc@acme.test>' },
    };
    assert.deepEqual(decide(cfg, dsn, FBL, NOW, sent(['bob@dest.test'])), {
      result: 'bounce',
      tenant: 'acme',
      queueId: QID,
      recipient: 'bob@dest.test',
      status: '5.1.1',
    });
    const forged = { ...dsn, recipients: [{ ...dsn.recipients[0], recipient: 'eve@dest.test' }] };
    assert.equal(decide(cfg, forged, FBL, NOW, sent(['bob@dest.test'])).result, 'unmatched');
  });

  it('knows a redacted address', () => {
    assert.ok(redacted('redacted@x.test'));
    assert.ok(redacted('xxxxxx@x.test'));
    assert.ok(!redacted('bob@x.test'));
  });
});
