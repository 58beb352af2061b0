// The operator's side of the complaint-rate guard (ADR 018): the CRD field rendered into the relay config,
// the fleet's complaint figures in status, and a complaint pause copied to the other relays.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildRelayConfig } from '../../operator/src/relay/config-render.js';
import { decidePauseCopies } from '../../operator/src/relay/fleet-sync.js';
import { complaintFigures } from '../../operator/src/relay/status.js';
import { checkConfigSchema } from '../../relay/src/contract/index.js';
import { resolveConfig } from '../../relay/src/config.js';
import { tenantState } from '../helpers/tenant-state.js';

describe('operator: complaint-rate guard', () => {
  it('renders tenants[].complaintRate into the relay config, which the relay schema accepts', () => {
    const built = buildRelayConfig({
      relay: {
        apiVersion: 'cartero.io/v1alpha1',
        kind: 'SmtpRelay',
        metadata: { name: 'mail', namespace: 'team', uid: 'u-1', generation: 1 },
        spec: {
          replicas: 1,
          tenants: [
            {
              name: 'news',
              trustedNetworks: ['10.1.0.0/16'],
              complaintRate: { warn: 0.002, pause: 0.005, window: '12h', minVolume: 500, cooldown: '0ms' },
            },
            { name: 'plain', trustedNetworks: ['10.2.0.0/16'] },
          ],
        },
      },
      defaultImage: 'cartero/relay:test',
      credentials: new Map(),
      pools: new Map(),
      allocations: [],
      adminToken: 'tok',
      peerPassword: 'peerpw',
      replicas: 1,
    });
    const tenants = (built.doc as { tenants: Record<string, unknown>[] }).tenants;
    assert.deepEqual(
      tenants.map((t) => [t.name, t.complaintRate]),
      [
        ['news', { warn: 0.002, pause: 0.005, window: '12h', minVolume: 500, cooldown: '0ms' }],
        ['plain', undefined],
      ],
    );
    assert.equal(checkConfigSchema(built.doc), undefined);
  });

  it('the relay resolves the defaults and refuses pause below warn', () => {
    const doc = (complaintRate?: Record<string, unknown>) => ({
      version: 1,
      listeners: [{ name: 'smtp', port: 2525 }],
      tenants: [{ name: 'news', ...(complaintRate ? { complaintRate } : {}) }],
    });
    const cfg = resolveConfig(doc(), '/tmp', {});
    assert.deepEqual(cfg.tenants.get('news')!.complaintRate, {
      warn: 0.001,
      pause: 0.003,
      windowMs: 86_400_000,
      minVolume: 1000,
      cooldownMs: 86_400_000,
    });
    assert.deepEqual(cfg.tenants.get('default')!.complaintRate, cfg.tenants.get('news')!.complaintRate);
    assert.throws(
      () => resolveConfig(doc({ warn: 0.01, pause: 0.005 }), '/tmp', {}),
      /\/tenants\/0\/complaintRate\/pause: must not be below complaintRate.warn/,
    );
  });

  it("status: the tenant's complaints and delivered recipients summed over the relays", () => {
    assert.deepEqual(complaintFigures([tenantState('news')]), {}, 'a relay before ADR 018 says nothing');
    assert.deepEqual(
      complaintFigures([
        tenantState('news', { delivered: 600, complaints: 1, complaintRate: 1 / 600 }),
        tenantState('news', { delivered: 400, complaints: 2, complaintRate: 0.005 }),
      ]),
      { complaintRate: 0.003, complaints: 3 },
    );
    assert.deepEqual(complaintFigures([tenantState('news', { delivered: 0, complaints: 0 })]), {
      complaintRate: 0,
      complaints: 0,
    });
  });

  it('a complaint pause on one relay is copied to the others with its reason', () => {
    const reason =
      'complaint rate 0.30% (3 complaints over 1000 delivered recipients in the last 24h) reached the pause threshold 0.30%';
    const copies = decidePauseCopies(
      ['news'],
      [
        {
          name: 'mail-0',
          tenants: [tenantState('news', { state: 'paused', by: 'guard', reason, pausedUntil: 5 })],
        },
        { name: 'mail-1', tenants: [tenantState('news')] },
      ],
    );
    assert.deepEqual(copies, [
      {
        op: 'pause',
        pod: 'mail-1',
        tenant: 'news',
        reason: `paused on mail-0: ${reason}`,
        until: 5,
        from: 'mail-0',
      },
    ]);
  });
});
