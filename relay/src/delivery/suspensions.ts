/**
 * Queue suspensions (KumoMTA's suspend, Postfix's hold): by tenant, by destination domain, or both. A
 * suspended message is held, not attempted; with a domain, only the recipients at that domain stay pending
 * while the others are delivered. Kept in `<spoolDir>/suspensions.json` (durable writer), so they survive
 * restarts.
 */
import { readFile } from 'node:fs/promises';
import { writeFileDurable } from '../durable.js';

export type SuspensionSource = 'admin' | 'fleet';

export interface Suspension {
  tenant?: string;
  domain?: string;
  reason: string;
  source: SuspensionSource;
  /** ISO 8601. */
  since: string;
}

export class Suspensions {
  private list: Suspension[] = [];

  constructor(private readonly file: string) {}

  async load(): Promise<void> {
    try {
      const doc = JSON.parse(await readFile(this.file, 'utf8')) as { v: number; suspensions: Suspension[] };
      if (doc.v === 1 && Array.isArray(doc.suspensions)) this.list = doc.suspensions;
    } catch {
      /* none yet, or unreadable: none */
    }
  }

  private save(): Promise<void> {
    return writeFileDurable(this.file, JSON.stringify({ v: 1, suspensions: this.list }));
  }

  /** Makes `next` the list and saves it; when the save fails, the list stays as it was. */
  private async replace(next: Suspension[]): Promise<void> {
    const before = this.list;
    this.list = next;
    try {
      await this.save();
    } catch (e) {
      this.list = before;
      throw e;
    }
  }

  get all(): readonly Suspension[] {
    return this.list;
  }

  get empty(): boolean {
    return this.list.length === 0;
  }

  /** Adds a suspension; the same tenant+domain+source replaces the earlier one. Durable when it resolves. */
  async add(s: Omit<Suspension, 'since'>, now: number): Promise<Suspension> {
    const full: Suspension = {
      ...(s.tenant ? { tenant: s.tenant } : {}),
      ...(s.domain ? { domain: s.domain.toLowerCase() } : {}),
      reason: s.reason,
      source: s.source,
      since: new Date(now).toISOString(),
    };
    const i = this.list.findIndex(
      (x) => x.tenant === full.tenant && x.domain === full.domain && x.source === full.source,
    );
    await this.replace(i >= 0 ? this.list.map((x, k) => (k === i ? full : x)) : [...this.list, full]);
    return full;
  }

  /** Removes the suspensions of exactly this tenant+domain (of one source when given). */
  async remove(
    tenant: string | undefined,
    domain: string | undefined,
    source?: SuspensionSource,
  ): Promise<boolean> {
    const d = domain?.toLowerCase();
    const keep = this.list.filter(
      (x) => !(x.tenant === tenant && x.domain === d && (!source || x.source === source)),
    );
    if (keep.length === this.list.length) return false;
    await this.replace(keep);
    return true;
  }

  /** Every message of the tenant is held. */
  tenantHeld(tenant: string): boolean {
    return this.list.some((x) => x.tenant === tenant && !x.domain);
  }

  /** Recipients at `domain` of this tenant's messages stay pending. */
  domainHeld(tenant: string, domain: string): boolean {
    return this.list.some((x) => x.domain === domain && (!x.tenant || x.tenant === tenant));
  }

  /** Whether a message (tenant, distinct pending domains) is held entirely. */
  holds(tenant: string, domains: ArrayLike<string>): boolean {
    if (this.list.length === 0) return false;
    if (this.tenantHeld(tenant)) return true;
    if (domains.length === 0) return false;
    for (let i = 0; i < domains.length; i++) if (!this.domainHeld(tenant, domains[i])) return false;
    return true;
  }
}
