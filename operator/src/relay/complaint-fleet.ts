/**
 * Decide: the complaint rate counted fleet-wide (ADR 018). Each relay judges the complaints it received
 * over the recipients it delivered; a feedback report may reach any pod behind the Service, so the
 * operator also sums every relay's complaint window per tenant and pauses the tenant when the fleet's
 * rate reaches its pause threshold (and the fleet delivered at least minVolume) while no relay has. The
 * pause is made on one relay as the guard's own (`source: guard`, so it is shared like any guard pause:
 * fleet-sync.ts copies it to the others and resumes the copies when it ends). Pure.
 */
import type { SmtpRelay } from '../api/types.js';
import { COMPLAINT_RATE_DEFAULTS, parseDuration } from '../../../relay/src/contract/index.js';
import type { LiveRelay } from './fleet-sync.js';

export interface FleetComplaintPause {
  pod: string;
  tenant: string;
  reason: string;
  until?: number;
}

type Tenant = NonNullable<SmtpRelay['spec']['tenants']>[number];

const pct = (r: number) => `${(r * 100).toFixed(2)}%`;

export function decideFleetComplaintPauses(
  tenants: Tenant[],
  live: LiveRelay[],
  now: number,
): FleetComplaintPause[] {
  if (live.length < 2) return [];
  const out: FleetComplaintPause[] = [];
  for (const t of tenants) {
    const c = { ...COMPLAINT_RATE_DEFAULTS, ...t.complaintRate };
    const states = live
      .map((f) => ({ pod: f.name, s: f.tenants.find((x) => x.name === t.name) }))
      .filter((x) => x.s && x.s.delivered !== undefined && x.s.complaints !== undefined);
    if (states.length < 2 || states.some((x) => x.s!.state === 'paused')) continue;
    const delivered = states.reduce((sum, x) => sum + x.s!.delivered!, 0);
    const complaints = states.reduce((sum, x) => sum + x.s!.complaints!, 0);
    if (delivered < c.minVolume || delivered <= 0 || complaints / delivered < c.pause) continue;
    const origin = states.reduce((a, b) => (b.s!.complaints! > a.s!.complaints! ? b : a));
    const cooldownMs = parseDuration(c.cooldown);
    out.push({
      pod: origin.pod,
      tenant: t.name,
      reason:
        `fleet complaint rate ${pct(complaints / delivered)} (${complaints} complaints over ${delivered} ` +
        `delivered recipients on ${states.length} relays in the last ${c.window}) reached the pause threshold ${pct(c.pause)}`,
      ...(cooldownMs > 0 ? { until: now + cooldownMs } : {}),
    });
  }
  return out;
}
