/**
 * The feedback processor (relay/src/feedback/processor.ts) when what a report changes cannot be written
 * (the suppression journal on a full disk): the report is not taken, so that its sender tries again, and
 * the try again is applied (not taken for a duplicate).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import type { RelayConfig, TenantConfig } from '../../relay/src/config.js';
import type { TenantRuntime } from '../../relay/src/tenant-runtime.js';
import { FeedbackMetrics, FeedbackProcessor } from '../../relay/src/feedback/processor.js';
import { recipientTag } from '../../relay/src/feedback/token.js';
import { createLogger } from '../../relay/src/log.js';

const KEY = Buffer.from('unit-test-feedback-key-0123456789');
const NOW = Date.UTC(2026, 11, 5);
const QID = '0MIRS2QX0ABCDEFGHIJK';

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
