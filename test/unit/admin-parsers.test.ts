/** The admin API's request parsers for tenants, rate limits, suppressions (tenant-admin.ts) and drain (drain-admin.ts). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { HttpError } from '../../relay/src/admin.js';
import { parseDrainPeers } from '../../relay/src/drain-admin.js';
import {
  parseChangesQuery,
  parsePause,
  parseRateCarry,
  parseSuppressionAdd,
  parseSuppressionPage,
} from '../../relay/src/tenant-admin.js';

/** Asserts that `f` throws an HttpError 400 whose message matches `re`. */
function bad(f: () => unknown, re: RegExp): void {
  assert.throws(f, (e: unknown) => e instanceof HttpError && e.status === 400 && re.test(e.message));
}

describe('tenant admin parsers', () => {
  it('pause: reason defaulted and cut to 300 characters, until as ISO or epoch ms, source fleet or admin', () => {
    assert.deepEqual(parsePause({}), { reason: 'paused by an administrator', until: undefined, by: 'admin' });
    assert.equal(parsePause({ reason: 'x'.repeat(400) }).reason.length, 300);
    assert.equal(parsePause({ reason: '' }).reason, 'paused by an administrator');
    assert.equal(parsePause({ until: 1234 }).until, 1234);
    assert.equal(parsePause({ until: '2026-01-01T00:00:00Z' }).until, Date.UTC(2026, 0, 1));
    assert.equal(parsePause({ source: 'fleet' }).by, 'fleet');
    assert.equal(parsePause({ source: 'someone' }).by, 'admin');
    bad(() => parsePause({ until: 'tomorrow' }), /until must be a time/);
    bad(() => parsePause({ until: Infinity }), /until must be a time/);
  });

  it('rate carry: unit h or d and a non-negative integer', () => {
    assert.deepEqual(parseRateCarry({ unit: 'h', used: 0 }), { unit: 'h', used: 0 });
    assert.deepEqual(parseRateCarry({ unit: 'd', used: 7 }), { unit: 'd', used: 7 });
    for (const b of [
      {},
      { unit: 'm', used: 1 },
      { unit: 'h', used: -1 },
      { unit: 'h', used: 1.5 },
      { unit: 'h', used: '3' },
    ])
      bad(() => parseRateCarry(b), /"unit": "h" \| "d"/);
  });

  it('suppression page and change feed queries are bounded', () => {
    const q = (s: string) => new URLSearchParams(s);
    assert.deepEqual(parseSuppressionPage(q('')), { tenant: undefined, after: undefined, limit: 100 });
    assert.deepEqual(parseSuppressionPage(q('tenant=a&after=xyz&limit=5')), {
      tenant: 'a',
      after: 'xyz',
      limit: 5,
    });
    assert.equal(parseSuppressionPage(q('limit=99999')).limit, 1000);
    assert.equal(parseSuppressionPage(q('limit=-3')).limit, 1);
    assert.equal(parseSuppressionPage(q('limit=abc')).limit, 100);
    assert.deepEqual(parseChangesQuery(q('')), { since: 0, limit: 1000 });
    assert.deepEqual(parseChangesQuery(q('since=12&limit=50000')), { since: 12, limit: 10_000 });
    bad(() => parseChangesQuery(q('since=-1')), /since must be a non-negative integer/);
    bad(() => parseChangesQuery(q('since=1.5')), /since/);
  });

  it('suppression add: an email address, a positive TTL (else the tenant default), a one-source reason', () => {
    assert.deepEqual(parseSuppressionAdd({ address: ' a@b.example ' }, 5000), {
      address: 'a@b.example',
      ttlMs: 5000,
      reason: 'added by admin',
      source: 'admin',
    });
    const fleet = parseSuppressionAdd(
      { address: 'a@b', ttl: '1h', reason: 'bounced', source: 'fleet' },
      5000,
    );
    assert.deepEqual(fleet, { address: 'a@b', ttlMs: 3_600_000, reason: 'bounced', source: 'fleet' });
    bad(() => parseSuppressionAdd({ address: 'not-an-address' }, 1), /address must be an email address/);
    bad(() => parseSuppressionAdd({}, 1), /address must be an email address/);
    bad(() => parseSuppressionAdd({ address: 'a@b', ttl: 'soon' }, 1), /^ttl: /);
    bad(() => parseSuppressionAdd({ address: 'a@b', ttl: '0s' }, 1), /ttl must be longer than 0/);
  });
});

describe('drain admin parser', () => {
  it('accepts no peers (deliver) and well-formed peers', () => {
    assert.deepEqual(parseDrainPeers({}), []);
    assert.deepEqual(parseDrainPeers({ peers: [] }), []);
    const peers = [
      { host: 'r-1', port: 2525 },
      { host: 'r-2', port: 25, tls: 'required' },
    ];
    assert.deepEqual(parseDrainPeers({ peers }), peers);
  });

  it('refuses unknown fields and malformed peers: a drain cannot be undone', () => {
    bad(() => parseDrainPeers({ peer: [] }), /unknown field "peer"/);
    bad(() => parseDrainPeers({ peers: 'r-1:25' }), /peers must be a list/);
    for (const p of [
      null,
      'r-1',
      { host: 'r-1' },
      { host: 'r-1', port: 0 },
      { host: 'r-1', port: 65536 },
      { host: 'r-1', port: 25.5 },
      { host: 1, port: 25 },
      { host: 'r-1', port: 25, tls: 'starttls' },
    ])
      bad(() => parseDrainPeers({ peers: [p] }), /peers must be \[/);
  });
});
