/**
 * Bulk queue operations on the index: suspensions (which messages and recipients are held), counts,
 * release after a resume, and purge by tenant and/or destination domain.
 */
import type { Suspensions } from './suspensions.js';
import { domainOf, type ActiveMessage } from './types.js';
import { QueueView } from './view.js';

/** Suspended mail is looked at again hourly: a resume releases what it held at once. */
const SUSPENDED_RECHECK_MS = 3_600_000;

export abstract class BulkOps extends QueueView {
  /** Makes queued messages due now (all, or those `match` accepts); returns how many. */
  abstract flush(match?: (slot: number) => boolean): number;

  /** Suspensions in force (set by the relay once loaded). */
  suspensions?: Suspensions;

  private domainNamesOf(s: number): string[] {
    const ds = this.index.domainsOf(s);
    return Array.from({ length: ds.length }, (_, k) => this.index.domainNames.names[ds[k]]);
  }

  /** Whether a message has anything a suspension holds (all of it, or recipients at a suspended domain). */
  private touchedBySuspension(s: number): boolean {
    const sp = this.suspensions;
    if (!sp || sp.empty) return false;
    const t = this.index.tenantOf(s);
    return sp.tenantHeld(t) || this.domainNamesOf(s).some((d) => sp.domainHeld(t, d));
  }

  protected suspendedUntil(s: number, now: number): number | undefined {
    const sp = this.suspensions;
    if (!sp || sp.empty) return undefined;
    // a resume releases at once (a flush of what it matched), so there is no need to look often
    return sp.holds(this.index.tenantOf(s), this.domainNamesOf(s)) ? now + SUSPENDED_RECHECK_MS : undefined;
  }

  protected heldRecipient(m: ActiveMessage, i: number): boolean {
    const sp = this.suspensions;
    return !!sp && !sp.empty && sp.domainHeld(m.env.tenant, domainOf(m.env.rcpts[i].address));
  }

  /** Queued messages held (wholly or in part) by a suspension, per tenant: cartero_queue_suspended. */
  suspendedByTenant(): Map<string, number> {
    const out = new Map<string, number>();
    if (!this.suspensions || this.suspensions.empty) return out;
    for (let s = 0; s < this.index.highWater; s++) {
      if (this.index.id(s) === undefined || !this.touchedBySuspension(s)) continue;
      const t = this.index.tenantOf(s);
      out.set(t, (out.get(t) ?? 0) + 1);
    }
    return out;
  }

  /** Queued messages of a tenant and/or with a pending recipient at a domain. */
  countMatching(tenant?: string, domain?: string): number {
    return this.matching(tenant, domain).length;
  }

  /** Makes the messages a lifted suspension matched due now; returns how many are no longer held. */
  release(tenant?: string, domain?: string): number {
    const slots = this.matching(tenant, domain);
    const set = new Set(slots);
    this.flush((s) => set.has(s));
    return slots.filter((s) => !this.suspendedUntil(s, 0)).length;
  }

  /**
   * Removes queued messages of a tenant and/or, with a domain, their pending recipients at that domain
   * (failed with a DSN when `dsn`). Messages being attempted are skipped and counted as busy.
   */
  async purge(
    tenant: string | undefined,
    domain: string | undefined,
    dsn: boolean,
  ): Promise<{ purged: number; dsn: number; busy: number }> {
    const ids = this.matching(tenant, domain).map((s) => this.index.id(s)!);
    const out = { purged: 0, dsn: 0, busy: 0 };
    let next = 0;
    const worker = async () => {
      for (let k = next++; k < ids.length; k = next++) {
        const r = await this.remove(
          ids[k],
          dsn ? 'purged by an administrator' : undefined,
          'queue.purged',
          domain,
        );
        if (r.result === 'deleted') out.purged++;
        else if (r.result === 'busy') out.busy++;
        if (r.dsn) out.dsn++;
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    return out;
  }
}
