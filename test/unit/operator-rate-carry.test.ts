/**
 * Carrying a departing pod's hour/day rate-limit use to the survivors: shared out, and a failure is
 * reported (the scale-down waits for it) instead of dropped with the pod.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { Pod } from '../../operator/src/cache.js';
import type { RelayAdmin } from '../../operator/src/relay/admin-client.js';
import { carryRateUse } from '../../operator/src/relay/drain.js';

const NOW = new Date('2026-12-05T13:20:00Z');
const HOUR_END = Date.parse('2026-12-05T14:00:00Z');
const pod = (name: string, ip: string, ready = true) =>
  ({
    metadata: { name },
    status: { podIP: ip, conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
  }) as unknown as Pod;

function fakeAdmins(opts: { failAddOn?: string } = {}) {
  const added: string[] = [];
  const admin = (ip: string) =>
    ({
      rateLimits: async () => ({
        share: 1,
        scope: 'replica',
        tenants: { billing: [{ unit: 'h', limit: 100, used: 5, windowStart: 0, resetsAt: HOUR_END }] },
      }),
      addRateUse: async (tenant: string, unit: string, used: number) => {
        if (ip === opts.failAddOn) throw new Error(`connect ECONNREFUSED ${ip}:9025`);
        added.push(`${ip} ${tenant} ${unit} +${used}`);
        return {};
      },
    }) as unknown as RelayAdmin;
  return { admin, added };
}

describe('carryRateUse', () => {
  const log = pino({ level: 'silent' });
  const pods = [pod('f-0', '10.0.0.1'), pod('f-1', '10.0.0.2'), pod('f-2', '10.0.0.3')];

  it('shares the departing pod’s use over the ready survivors, rounded up', async () => {
    const { admin, added } = fakeAdmins();
    assert.deepEqual(await carryRateUse(pods, ['f-2'], admin, log, () => NOW), []);
    assert.deepEqual(added, ['10.0.0.1 billing h +3', '10.0.0.2 billing h +3']);
  });

  it('reports a pod whose use could not be carried', async () => {
    const { admin } = fakeAdmins({ failAddOn: '10.0.0.2' });
    const failed = await carryRateUse(pods, ['f-2'], admin, log, () => NOW);
    assert.equal(failed.length, 1);
    assert.match(failed[0]!, /^f-2 \(carrying its rate-limit use: .*ECONNREFUSED/);
  });

  it('carries nothing when no survivor is ready (scaling to zero)', async () => {
    const { admin, added } = fakeAdmins();
    assert.deepEqual(await carryRateUse([pod('f-0', '10.0.0.1')], ['f-0'], admin, log, () => NOW), []);
    assert.deepEqual(added, []);
  });
});
