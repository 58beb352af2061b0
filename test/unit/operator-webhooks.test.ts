/** spec.tenants[].webhooks: rendered into the relay config, signing keys into the operator Secret. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { SmtpRelay } from '../../operator/src/api/types.js';
import { buildRelayConfig, type BuildInput } from '../../operator/src/relay/config-render.js';
import { checkRenderedConfig } from '../../operator/src/relay/config-check.js';
import { secretsOf } from '../../operator/src/cache.js';
import { buildInputFixture, smtpRelayFixture } from '../helpers/smtprelay-fixture.js';

function relay(): SmtpRelay {
  return smtpRelayFixture({
    tenants: [
      {
        name: 'shop',
        trustedNetworks: ['10.1.0.0/16'],
        webhooks: [
          {
            url: 'https://hooks.shop.example/cartero',
            secretRef: { name: 'shop-hooks' },
            events: ['delivered', 'bounced'],
            batchSize: 50,
            timeout: '5s',
            retryFor: '48h',
          },
          { url: 'http://events.shop.svc:8080/in', secretRef: { name: 'shop-hooks', key: 'second' } },
        ],
      },
    ],
  });
}

const input = (webhookKeys: Map<string, string>): BuildInput => buildInputFixture(relay(), { webhookKeys });

describe('SmtpRelay tenants[].webhooks', () => {
  it('renders each endpoint with its key as a file of the operator Secret; the relay accepts it', () => {
    const built = buildRelayConfig(
      input(
        new Map([
          ['shop-hooks/signing.key', 'k1'],
          ['shop-hooks/second', 'k2'],
        ]),
      ),
    );
    const t = (built.doc.tenants as Record<string, unknown>[])[0];
    assert.deepEqual(t.webhooks, [
      {
        url: 'https://hooks.shop.example/cartero',
        secretFile: 'webhook-shop-0.key',
        events: ['delivered', 'bounced'],
        batchSize: 50,
        timeout: '5s',
        retryFor: '48h',
      },
      { url: 'http://events.shop.svc:8080/in', secretFile: 'webhook-shop-1.key' },
    ]);
    assert.equal(built.secretData['webhook-shop-0.key'], 'k1');
    assert.equal(built.secretData['webhook-shop-1.key'], 'k2');
    assert.deepEqual(built.problems, []);
    assert.equal(checkRenderedConfig(built.doc, built.secretData), undefined);
    assert.ok(secretsOf(relay()).includes('shop-hooks'), 'a change to the key Secret reconciles the relay');
  });

  it('a missing Secret leaves the endpoint out with a problem', () => {
    const built = buildRelayConfig(input(new Map([['shop-hooks/second', 'k2']])));
    assert.match(
      built.problems[0].message,
      /webhook https:\/\/hooks\.shop\.example\/cartero: Secret shop-hooks \(key signing\.key\) not found/,
    );
    const t = (built.doc.tenants as Record<string, unknown>[])[0];
    assert.equal((t.webhooks as unknown[]).length, 1);
    assert.equal(checkRenderedConfig(built.doc, built.secretData), undefined);
    const none = buildRelayConfig(input(new Map()));
    assert.equal((none.doc.tenants as Record<string, unknown>[])[0].webhooks, undefined);
  });
});
