/**
 * The bulk-sender lint through the operator (ADR 014): a tenant marked `bulk` with `lint.policy: report`
 * in an SmtpRelay; a message without aligned DKIM or one-click unsubscribe is accepted by the relay pod,
 * and `kubectl get smr` shows the broken rules in status.lint with a count and the sample's Message-ID.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { SmtpRelay } from '../../operator/src/api/types.js';
import { waitFor } from '../helpers/poll.js';
import { operatorE2e } from '../helpers/operator-e2e.js';
import { sendMail } from '../helpers/swaks.js';

const NS = 'lint';
const t = operatorE2e({ name: 'operator-lint', namespace: NS, mxAddress: '127.0.4.98' });

describe('bulk-sender lint through the operator', { timeout: 180_000 }, () => {
  it('status.lint shows the rules a bulk tenant broke, with a count and a sample Message-ID', async () => {
    await t.apply(
      t.relayManifest({
        replicas: 1,
        tenants: "    - {name: news, trustedNetworks: ['127.0.0.0/8'], bulk: true, lint: {policy: report}}",
        extra: '  listeners: [{name: smtp, port: 25, auth: optional}]',
      }),
    );
    await t.waitForCurrentConfig().catch(async (e) => {
      throw new Error(`not Ready: ${JSON.stringify((await t.getRelay())?.status?.conditions)}`, { cause: e });
    });
    const ip = await t.podIp('fleet-0');
    const info = await sendMail(2525, { host: ip, from: 'app@news.example', to: ['ok-lint@example.test'] });
    assert.match(info.response, /^250 /);
    const lint = await waitFor(
      async () => {
        const out = await t.kubectl(['get', 'smr', 'fleet', '-n', NS, '-o', 'jsonpath={.status.lint}']);
        return out.trim()
          ? (JSON.parse(out) as NonNullable<NonNullable<SmtpRelay['status']>['lint']>)
          : undefined;
      },
      { what: 'status.lint', timeoutMs: 30_000, intervalMs: 250 },
    );
    assert.deepEqual(
      lint.map((x) => [x.tenant, x.rules.map((r) => [r.rule, r.count, r.sampleMessageId, r.pod])]),
      [
        [
          'news',
          [
            ['dkim-alignment', 1, info.messageId, 'fleet-0'],
            ['one-click-unsubscribe', 1, info.messageId, 'fleet-0'],
          ],
        ],
      ],
    );
  });
});
