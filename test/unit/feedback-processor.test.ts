/**
 * The feedback processor (relay/src/feedback/processor.ts) when what a report changes cannot be written
 * (the suppression journal on a full disk): the report is not taken, so that its sender tries again, and
 * the try again is applied (not taken for a duplicate), and a bounce is counted in the bounce rate once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import type { RelayConfig, TenantConfig } from '../../relay/src/config.js';
import { TenantRuntime } from '../../relay/src/tenant-runtime.js';
import { resolveConfig } from '../../relay/src/config.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import { FeedbackMetrics, FeedbackProcessor } from '../../relay/src/feedback/processor.js';
import { pageOfUnmatched } from '../../relay/src/feedback/wire.js';
import { recipientTag } from '../../relay/src/feedback/token.js';
import { createLogger } from '../../relay/src/log.js';
import { KEY, NOW, QID } from '../helpers/feedback-fixture.js';

test('a complaint the suppression list could not write is not taken; sent again, it is applied', async () => {
  const cfg = {
    tenants: new Map([
      [
        'acme',
        {
          name: 'acme',
          returnPath: { domain: 'b.acme.test', prefix: 'bounce' },
          suppression: { enabled: true, ttlMs: 86_400_000 },
        } as unknown as TenantConfig,
      ],
    ]),
    feedback: { key: KEY, tokenTtlDays: 30, unmatchedKeep: 10 },
  } as unknown as RelayConfig;
  let full = true;
  const added: string[] = [];
  const tenancy = {
    suppressions: {
      isSuppressed: () => undefined,
      add: (s: { address: string }) => {
        if (full) return Promise.reject(new Error('could not write suppressions.log: ENOSPC'));
        added.push(s.address);
        return Promise.resolve({});
      },
    },
  } as unknown as TenantRuntime;
  const complained: string[] = [];
  const events: string[] = [];
  const p = new FeedbackProcessor({
    cfg: () => cfg,
    tenancy: () => tenancy,
    events: () => ({ emit: (e) => void events.push(e.type) }),
    complaints: () => ({ complaint: (_t: string, r: string) => void complained.push(r) }),
    metrics: new FeedbackMetrics(new Registry()),
    log: createLogger('silent'),
    now: () => NOW,
  });
  const target = {
    kind: 'token' as const,
    tenant: 'acme',
    queueId: QID,
    recipientTag: recipientTag(KEY, 'bob@dest.test'),
  };
  const arf = Buffer.from(
    'Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n--b\r\n' +
      'Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nOriginal-Rcpt-To: bob@dest.test\r\n' +
      '--b--\r\n',
  );
  const rcpts = [{ address: 'bounce+x@b.acme.test', target }];
  await assert.rejects(p.handle(rcpts, arf), /ENOSPC/, 'not taken: the listener answers 451');
  assert.deepEqual([complained, events], [[], []]);
  full = false;
  const again = await p.handle(rcpts, arf);
  assert.equal(again[0].result, 'complaint');
  assert.deepEqual([added, complained, events], [['bob@dest.test'], ['bob@dest.test'], ['complained']]);
});

test('a hard bounce whose suppression could not be written is not counted; sent again, it counts once', async () => {
  const dir = await makeTmpDir('cartero-onoutcome-');
  const cfg = resolveConfig(
    {
      version: 1,
      hostname: 'relay.unit.test',
      listeners: [{ name: 'smtp', port: 0 }],
      admin: { port: 0 },
      tenants: [{ name: 'acme', trustedNetworks: ['127.0.0.0/8'] }],
    },
    dir,
  );
  const rt = await TenantRuntime.open(cfg, Date.now, createLogger('silent'));
  try {
    const add = rt.suppressions.add.bind(rt.suppressions);
    rt.suppressions.add = () => Promise.reject(new Error('could not write suppressions.log: ENOSPC'));
    const bounce = () => rt.onOutcome('acme', 'bob@dest.test', 'bounced', '5.1.1', '550 5.1.1 no such user');
    await assert.rejects(bounce(), /ENOSPC/);
    assert.equal(rt.guard.state('acme').hard, 0, 'not counted while not suppressed');
    rt.suppressions.add = add;
    await bounce();
    assert.equal(rt.guard.state('acme').hard, 1);
    assert.equal(rt.suppressions.isSuppressed('acme', 'bob@dest.test')?.source, 'bounce');
  } finally {
    await rt.close();
    await removeTmpDir(dir);
  }
});

test('GET /feedback/unmatched pages: the newest `limit` reports within the byte budget, at least one', () => {
  const rep = (i: number, size: number) => ({
    at: '2026-12-05T00:00:00.000Z',
    rcpt: `r${i}@x.test`,
    reason: 'no token',
    kind: 'dsn',
    size,
    text: 'x'.repeat(size),
  });
  const reports = [0, 1, 2, 3].map((i) => rep(i, 1000));
  assert.deepEqual(pageOfUnmatched(reports, 2, 1e6), { reports: reports.slice(0, 2), truncated: true });
  assert.deepEqual(pageOfUnmatched(reports, 10, 1e6), { reports });
  assert.deepEqual(pageOfUnmatched(reports, 10, 2500).reports.length, 2, 'the byte budget ends the page');
  const huge = [rep(9, 5000)];
  assert.deepEqual(pageOfUnmatched(huge, 10, 100), { reports: huge }, 'one report even over the budget');
  assert.deepEqual(pageOfUnmatched([], 10, 100), { reports: [] });
});
