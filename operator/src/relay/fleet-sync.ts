/**
 * Decide: the fleet acts as one relay. A tenant paused on one relay (by its bounce-rate guard or by
 * hand) is paused on every other; when that pause ends, the copies are resumed. A suppression added or
 * removed on one relay is copied to the others. Pure functions from what the relays report to the admin
 * calls to make; the controller makes them. Copies are marked `fleet`, so they are never copied back.
 */
import type { SuppressionChange, TenantState } from './admin-client.js';

/** A relay that takes part: it answered its admin API and is not draining. */
export interface LiveRelay {
  name: string;
  tenants: TenantState[];
}

export type PauseCopy =
  | { op: 'pause'; pod: string; tenant: string; reason: string; until?: number; from: string }
  | { op: 'resume'; pod: string; tenant: string };

/** The pauses to copy and the copies to resume, in tenant then pod order. */
export function decidePauseCopies(tenants: string[], live: LiveRelay[]): PauseCopy[] {
  if (live.length < 2) return [];
  const out: PauseCopy[] = [];
  for (const tenant of tenants) {
    const states = live.map((f) => ({ f, s: f.tenants.find((x) => x.name === tenant) }));
    const origin = states.find((x) => x.s?.state === 'paused' && x.s.by !== 'fleet');
    for (const { f, s } of states) {
      if (!s) continue;
      if (origin && s.state !== 'paused')
        out.push({
          op: 'pause',
          pod: f.name,
          tenant,
          reason: `paused on ${origin.f.name}: ${origin.s!.reason ?? 'no reason given'}`,
          ...(origin.s!.pausedUntil !== undefined ? { until: origin.s!.pausedUntil } : {}),
          from: origin.f.name,
        });
      else if (!origin && s.state === 'paused' && s.by === 'fleet')
        out.push({ op: 'resume', pod: f.name, tenant });
    }
  }
  return out;
}

export interface SuppressionCopy {
  op: 'add' | 'remove';
  /** The relay to call. */
  pod: string;
  tenant: string;
  address: string;
  /** For `add`: the reason, naming the relay it was suppressed on. */
  reason?: string;
}

/** The copies of the suppression changes relay `from` reported (not those it got from the fleet). */
export function decideSuppressionCopies(
  from: string,
  changes: SuppressionChange[],
  live: string[],
): SuppressionCopy[] {
  const out: SuppressionCopy[] = [];
  for (const c of changes) {
    const fromFleet = c.op === 'add' ? c.entry?.source === 'fleet' : c.source === 'fleet';
    if (fromFleet) continue;
    for (const pod of live) {
      if (pod === from) continue;
      out.push(
        c.op === 'add'
          ? {
              op: 'add',
              pod,
              tenant: c.tenant,
              address: c.address,
              reason: `suppressed on ${from}: ${c.entry?.reason ?? ''}`.trim(),
            }
          : { op: 'remove', pod, tenant: c.tenant, address: c.address },
      );
    }
  }
  return out;
}
