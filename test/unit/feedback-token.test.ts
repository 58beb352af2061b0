import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  base32,
  makeToken,
  MAX_LOCAL_PART,
  MAX_PREFIX,
  parseToken,
  returnPathAddress,
  splitLocalPart,
  TOKEN_CHARS,
  tokenRecipient,
  unbase32,
} from '../../relay/src/feedback/token.js';
import { envelopeSender, tagsReturnPath } from '../../relay/src/feedback/return-path.js';
import { newQueueId, type Envelope } from '../../relay/src/spool/types.js';
import type { RelayConfig, TenantConfig } from '../../relay/src/config.js';

const KEY = Buffer.from('0123456789abcdef0123456789abcdef');
const DAY = 86_400_000;
const NOW = Date.UTC(2026, 11, 5, 12);
const QID = newQueueId(NOW);
const TENANTS = ['acme', 'globex', 'default'];

describe('feedback token', () => {
  it('base32 round-trips and refuses foreign characters', () => {
    for (const n of [0, 1, 5, 13, 30]) {
      const b = Buffer.from(Array.from({ length: n }, (_, i) => (i * 37 + 11) & 255));
      assert.deepEqual(unbase32(base32(b)), b);
      assert.deepEqual(unbase32(base32(b).toUpperCase()), b);
    }
    assert.equal(unbase32('ab1'), undefined);
  });

  it('makes a token that parses back to tenant, queue id and recipient', () => {
    const tok = makeToken(KEY, { tenant: 'acme', queueId: QID, recipient: 'Bob@Example.org' }, NOW);
    assert.equal(tok.length, TOKEN_CHARS);
    assert.match(tok, /^[a-z2-7]+$/);
    const p = parseToken(KEY, tok, TENANTS, NOW + 3 * DAY, 30);
    assert.ok(p.ok);
    assert.equal(p.tenant, 'acme');
    assert.equal(p.queueId, QID);
    assert.ok(tokenRecipient(KEY, p.recipientTag, 'bob@example.org'));
    assert.ok(!tokenRecipient(KEY, p.recipientTag, 'eve@example.org'));
    // mail systems may change the case of the local part
    assert.ok(parseToken(KEY, tok.toUpperCase(), TENANTS, NOW, 30).ok);
  });

  it('keeps the local part within 64 octets with the longest prefix', () => {
    const a = returnPathAddress(
      KEY,
      { domain: 'bounces.example.com', prefix: 'p'.repeat(MAX_PREFIX) },
      { tenant: 'acme', queueId: QID, recipient: 'x@y.z' },
      NOW,
    );
    assert.equal(a.split('@')[0].length, MAX_LOCAL_PART);
    assert.equal(splitLocalPart(a.split('@')[0], 'P'.repeat(MAX_PREFIX))?.length, TOKEN_CHARS);
    assert.equal(splitLocalPart('other+abc', 'bounce'), undefined);
  });

  it('refuses a forged MAC, another key, a truncated token and an unknown tenant', () => {
    const tok = makeToken(KEY, { tenant: 'acme', queueId: QID, recipient: 'bob@example.org' }, NOW);
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === 'a' ? 'b' : 'a') + s.slice(i + 1);
    assert.deepEqual(parseToken(KEY, flip(tok, TOKEN_CHARS - 2), TENANTS, NOW, 30), {
      ok: false,
      reason: 'forged',
    });
    // a changed queue id or recipient tag breaks the MAC too
    assert.deepEqual(parseToken(KEY, flip(tok, 10), TENANTS, NOW, 30), { ok: false, reason: 'forged' });
    const other = Buffer.from('another key, thirty-two bytes...');
    assert.deepEqual(parseToken(other, tok, TENANTS, NOW, 30), { ok: false, reason: 'forged' });
    assert.deepEqual(parseToken(KEY, tok.slice(0, -1), TENANTS, NOW, 30), { ok: false, reason: 'malformed' });
    assert.deepEqual(parseToken(KEY, tok.slice(0, -1) + '1', TENANTS, NOW, 30), {
      ok: false,
      reason: 'malformed',
    });
    // the tenant was removed from the config: nothing to attribute it to
    assert.deepEqual(parseToken(KEY, tok, ['globex', 'default'], NOW, 30), { ok: false, reason: 'forged' });
  });

  it('binds the token to its tenant: same payload under another tenant does not verify', () => {
    const mine = makeToken(KEY, { tenant: 'globex', queueId: QID, recipient: 'bob@example.org' }, NOW);
    const p = parseToken(KEY, mine, TENANTS, NOW, 30);
    assert.ok(p.ok);
    assert.equal(p.tenant, 'globex');
  });

  it('refuses a replay beyond its lifetime and a token from the future', () => {
    const tok = makeToken(KEY, { tenant: 'acme', queueId: QID, recipient: 'bob@example.org' }, NOW);
    assert.ok(parseToken(KEY, tok, TENANTS, NOW + 30 * DAY, 30).ok);
    assert.deepEqual(parseToken(KEY, tok, TENANTS, NOW + 31 * DAY, 30), { ok: false, reason: 'expired' });
    assert.ok(parseToken(KEY, tok, TENANTS, NOW - DAY, 30).ok); // a clock a little behind
    assert.deepEqual(parseToken(KEY, tok, TENANTS, NOW - 3 * DAY, 30), { ok: false, reason: 'expired' });
  });

  it('throws for something that is not a queue id', () => {
    assert.throws(() => makeToken(KEY, { tenant: 'acme', queueId: 'nope', recipient: 'a@b.c' }, NOW));
  });
});

describe('envelope sender', () => {
  const tenant = (rp?: TenantConfig['returnPath']) =>
    ({ name: 'acme', ...(rp ? { returnPath: rp } : {}) }) as TenantConfig;
  const cfg = (t: TenantConfig, key: Buffer | null = KEY) =>
    ({
      tenants: new Map([['acme', t]]),
      feedback: { ...(key ? { key } : {}), tokenTtlDays: 30, unmatchedKeep: 100 },
    }) as Pick<RelayConfig, 'tenants' | 'feedback'>;
  const env = (from: string, origin: Envelope['origin'] = 'smtp') =>
    ({
      id: QID,
      tenant: 'acme',
      from,
      origin,
      rcpts: [{ address: 'bob@example.org' }, { address: 'carol@example.org' }],
    }) as Envelope;
  const rp = { domain: 'bounces.example.com', prefix: 'bounce' };

  it('tags one-recipient transactions of a tenant with returnPath', () => {
    const from = envelopeSender(cfg(tenant(rp)), env('app@example.com'), [1], NOW);
    const m = /^bounce\+([a-z2-7]+)@bounces\.example\.com$/.exec(from);
    assert.ok(m, from);
    const p = parseToken(KEY, m[1], ['acme'], NOW, 30);
    assert.ok(p.ok && tokenRecipient(KEY, p.recipientTag, 'carol@example.org'));
  });

  it('keeps the sender without returnPath, without a key, for the null sender and our DSNs', () => {
    assert.equal(envelopeSender(cfg(tenant()), env('app@example.com'), [0], NOW), 'app@example.com');
    assert.equal(envelopeSender(cfg(tenant(rp), null), env('a@example.com'), [0], NOW), 'a@example.com');
    assert.equal(envelopeSender(cfg(tenant(rp)), env(''), [0], NOW), '');
    assert.equal(tagsReturnPath(cfg(tenant(rp)), env('x@example.com', 'dsn')), false);
    assert.equal(tagsReturnPath(cfg(tenant(rp)), env('x@example.com')), true);
  });
});
