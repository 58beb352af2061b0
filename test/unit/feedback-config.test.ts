import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { resolveConfig } from '../../relay/src/config.js';
import { ConfigError } from '../../relay/src/errors.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

let base: string;
before(async () => {
  base = await makeTmpDir('cartero-feedback-config-');
  await mkdir(path.join(base, 'etc/secrets'), { recursive: true });
  await writeFile(path.join(base, 'etc/secrets/fbkey'), 'k'.repeat(32));
  await writeFile(path.join(base, 'etc/secrets/short'), 'k'.repeat(8));
});
after(() => removeTmpDir(base));

const doc = (extra: Record<string, unknown>): Record<string, unknown> => ({
  version: 1,
  listeners: [{ name: 'smtp', port: 2525 }],
  paths: { root: 'etc' },
  ...extra,
});
const rp = { domain: 'Bounces.Example.com' };

function fails(d: Record<string, unknown>, field: string, reason: RegExp): void {
  assert.throws(
    () => resolveConfig(d, base, {}),
    (e: unknown) => e instanceof ConfigError && e.field === field && reason.test(e.message),
  );
}

describe('feedback config', () => {
  it('resolves the key, the listener and the tenants return path and feedback address', () => {
    const c = resolveConfig(
      doc({
        feedback: { tokenKeyFile: 'fbkey', tokenTtl: '7d', listener: { port: 0, address: '${IP}' } },
        tenants: [{ name: 'acme', returnPath: rp, feedbackAddress: 'FBL@example.com' }],
      }),
      base,
      { IP: '127.0.0.9' },
    );
    assert.equal(c.feedback.key?.length, 32);
    assert.equal(c.feedback.tokenTtlDays, 7);
    assert.deepEqual(c.feedback.listener, {
      address: '127.0.0.9',
      port: 0,
      maxMessageSize: 1024 * 1024,
      timeoutMs: 120_000,
      maxConnections: 100,
    });
    assert.equal(c.feedback.unmatchedKeep, 100);
    const t = c.tenants.get('acme')!;
    assert.deepEqual(t.returnPath, { domain: 'bounces.example.com', prefix: 'bounce' });
    assert.equal(t.feedbackAddress, 'fbl@example.com');
  });

  it('has no listener and no key by default', () => {
    const c = resolveConfig(doc({}), base, {});
    assert.deepEqual(c.feedback, { tokenTtlDays: 30, unmatchedKeep: 100 });
  });

  it('refuses a return path without a key, a short key, shared domains and addresses', () => {
    fails(doc({ tenants: [{ name: 'acme', returnPath: rp }] }), '/tenants/0/returnPath', /tokenKeyFile/);
    fails(doc({ feedback: { tokenKeyFile: 'short' } }), '/feedback/tokenKeyFile', /at least 16 bytes/);
    fails(
      doc({
        feedback: { tokenKeyFile: 'fbkey' },
        tenants: [
          { name: 'a', returnPath: rp },
          { name: 'b', returnPath: { domain: 'bounces.example.com' } },
        ],
      }),
      '/tenants/1/returnPath/domain',
      /already the bounce domain of tenant a/,
    );
    fails(
      doc({
        tenants: [
          { name: 'a', feedbackAddress: 'fbl@example.com' },
          { name: 'b', feedbackAddress: 'FBL@example.com' },
        ],
      }),
      '/tenants/1/feedbackAddress',
      /already the feedback address/,
    );
  });

  it('refuses a bounce domain that is not a domain name and a prefix that would not fit', () => {
    for (const domain of ['bounces', 'bad_domain.example.com', '-x.example.com', 'a..b'])
      fails(
        doc({ feedback: { tokenKeyFile: 'fbkey' }, tenants: [{ name: 'a', returnPath: { domain } }] }),
        '/tenants/0/returnPath/domain',
        /pattern|must match/,
      );
    fails(
      doc({
        feedback: { tokenKeyFile: 'fbkey' },
        tenants: [{ name: 'a', returnPath: { domain: 'b.example.com', prefix: 'p'.repeat(16) } }],
      }),
      '/tenants/0/returnPath/prefix',
      /./,
    );
  });

  it('resolves the peer lookup (ADR 020): the name, the admin port, a timeout and a peer cap', () => {
    const c = resolveConfig(
      doc({ feedback: { peerLookup: { host: 'Mail-Pods.NS.svc.cluster.local.', port: 9025 } } }),
      base,
      {},
    );
    assert.deepEqual(c.feedback.peerLookup, {
      host: 'mail-pods.ns.svc.cluster.local',
      port: 9025,
      timeoutMs: 2000,
      maxPeers: 32,
    });
    const ip = resolveConfig(
      doc({ feedback: { peerLookup: { host: '127.0.0.5', port: 1, timeout: '100ms', maxPeers: 256 } } }),
      base,
      {},
    );
    assert.deepEqual(ip.feedback.peerLookup, { host: '127.0.0.5', port: 1, timeoutMs: 100, maxPeers: 256 });
    assert.equal(resolveConfig(doc({}), base, {}).feedback.peerLookup, undefined);
    fails(doc({ feedback: { peerLookup: { host: 'x.example' } } }), '/feedback/peerLookup/port', /required/);
    fails(doc({ feedback: { peerLookup: { host: 'bad host', port: 1 } } }), '/feedback/peerLookup/host', /./);
    fails(
      doc({ feedback: { peerLookup: { host: 'x.example', port: 1, timeout: '31s' } } }),
      '/feedback/peerLookup/timeout',
      /./,
    );
  });
});
