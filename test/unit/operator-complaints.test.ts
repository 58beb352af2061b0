// The operator's side of the complaint-rate guard (ADR 018): the CRD field rendered into the relay config,
// the fleet's complaint figures in status, and a complaint pause copied to the other relays.
import { buildInputFixture, smtpRelayFixture } from '../helpers/smtprelay-fixture.js';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildRelayConfig } from '../../operator/src/relay/config-render.js';
import { decidePauseCopies } from '../../operator/src/relay/fleet-sync.js';
import { complaintFigures } from '../../operator/src/relay/status.js';
import { CONFIG_SCHEMA, COMPLAINT_RATE_DEFAULTS, checkConfigSchema } from '../../relay/src/contract/index.js';
import { decideFleetComplaintPauses } from '../../operator/src/relay/complaint-fleet.js';
import { parsePause } from '../../relay/src/tenant-admin.js';
import { resolveConfig } from '../../relay/src/config.js';
import { tenantState } from '../helpers/tenant-state.js';

describe('operator: complaint-rate guard', () => {
  it('renders tenants[].complaintRate into the relay config, which the relay schema accepts', () => {
    const built = buildRelayConfig(
      buildInputFixture(
        smtpRelayFixture({
          replicas: 1,
          tenants: [
            {
              name: 'news',
              trustedNetworks: ['10.1.0.0/16'],
              complaintRate: { warn: 0.002, pause: 0.005, window: '12h', minVolume: 500, cooldown: '0ms' },
            },
            { name: 'plain', trustedNetworks: ['10.2.0.0/16'] },
          ],
        }),
      ),
    );
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

  it("the contract's defaults are the relay schema's", () => {
    const props = (
      CONFIG_SCHEMA.properties.tenants.items.properties.complaintRate as unknown as {
        properties: Record<string, { default: unknown }>;
      }
    ).properties;
    assert.deepEqual(Object.fromEntries(Object.entries(props).map(([k, v]) => [k, v.default])), {
      ...COMPLAINT_RATE_DEFAULTS,
    });
  });

  describe('the fleet-wide complaint rate', () => {
    const NOW = 1_700_000_000_000;
    const pod = (
      name: string,
      delivered: number,
      complaints: number,
      state: 'active' | 'paused' = 'active',
    ) => ({
      name,
      tenants: [tenantState('news', { state, delivered, complaints })],
    });

    it('pauses on the pod with the most complaints when the summed rate reaches pause', () => {
      // 1/600 and 2/400 on their own are below 0.5 % on mail-0; summed: 3/1000 = 0.3 %
      assert.deepEqual(
        decideFleetComplaintPauses([{ name: 'news' }], [pod('mail-0', 600, 1), pod('mail-1', 400, 2)], NOW),
        [
          {
            pod: 'mail-1',
            tenant: 'news',
            reason:
              'fleet complaint rate 0.30% (3 complaints over 1000 delivered recipients on 2 relays in the last 24h) reached the pause threshold 0.30%',
            until: NOW + 86_400_000,
          },
        ],
      );
    });

    it('nothing below the rate, below minVolume, when a relay paused already, or on a single relay', () => {
      const tenants = [{ name: 'news' }];
      assert.deepEqual(decideFleetComplaintPauses(tenants, [pod('a', 600, 1), pod('b', 400, 1)], NOW), []);
      assert.deepEqual(decideFleetComplaintPauses(tenants, [pod('a', 500, 5), pod('b', 400, 5)], NOW), []);
      assert.deepEqual(
        decideFleetComplaintPauses(tenants, [pod('a', 600, 3, 'paused'), pod('b', 400, 3)], NOW),
        [],
      );
      assert.deepEqual(decideFleetComplaintPauses(tenants, [pod('a', 5000, 50)], NOW), []);
      // relays before ADR 018 report no complaint figures
      assert.deepEqual(
        decideFleetComplaintPauses(
          tenants,
          [{ name: 'a', tenants: [tenantState('news')] }, pod('b', 5000, 50)],
          NOW,
        ),
        [],
      );
    });

    it("uses the spec's thresholds; cooldown 0ms pauses until resumed", () => {
      const tenants = [
        { name: 'news', complaintRate: { pause: 0.01, minVolume: 10, cooldown: '0ms', window: '1h' } },
      ];
      const out = decideFleetComplaintPauses(tenants, [pod('a', 50, 0), pod('b', 50, 1)], NOW);
      assert.equal(out.length, 1);
      assert.equal(out[0].until, undefined);
      assert.match(out[0].reason, /on 2 relays in the last 1h\) reached the pause threshold 1\.00%$/);
    });

    it("the relay takes the pause as the guard's own (source guard), so the fleet copies it", () => {
      assert.equal(parsePause({ reason: 'x', source: 'guard' }).by, 'guard');
      assert.equal(parsePause({ reason: 'x', source: 'fleet' }).by, 'fleet');
      assert.equal(parsePause({ reason: 'x', source: 'other' }).by, 'admin');
    });
  });
});
