/**
 * The relay's own check of its pool addresses: forward-confirmed reverse DNS (identity/check.ts) of each
 * address for its EHLO name, at start, after each reload and every `dns.identityCheckInterval`. Results
 * go to cartero_egress_fcrdns{pool,ip,result} (1 for the current result, 0 for the others) and to the
 * log when an address's result changes. Advice only: mail is sent either way (an IpPool with
 * requireFcrdns is enforced by the operator's allocation, not here).
 */
import type { Logger } from 'pino';
import { Gauge, type Registry } from 'prom-client';
import type { FcrdnsCheck } from '../contract/admin-api.js';
import { checkFcrdns } from './check.js';
import { FCRDNS_RESULTS, type FcrdnsResult } from './judge.js';
import type { IdentityResolver } from './resolver.js';

export interface PoolAddresses {
  name: string;
  addresses: { ip: string; ehlo: string }[];
}

export interface EgressIdentityOptions {
  registry: Registry;
  log: Logger;
  /** Read at each check: a reload replaces them. */
  resolver: () => IdentityResolver;
  pools: () => PoolAddresses[];
  intervalMs: () => number;
}

export class EgressIdentityMonitor {
  private readonly gauge: Gauge<'pool' | 'ip' | 'result'>;
  /** Per `pool/ip`: the last result (bounded by the config's addresses; cleared on reconfigure). */
  private readonly last = new Map<string, FcrdnsResult>();
  private timer?: NodeJS.Timeout;
  /** Bumped by reconfigure: a check started before it reports nothing. */
  private epoch = 0;
  private stopped = false;

  constructor(private readonly o: EgressIdentityOptions) {
    this.gauge = new Gauge({
      name: 'cartero_egress_fcrdns',
      help: 'Forward-confirmed reverse DNS of a pool address for its EHLO name: 1 for the current result (Verified, PtrMissing, ForwardMismatch, EhloMismatch, LookupFailed), 0 for the others.',
      labelNames: ['pool', 'ip', 'result'],
      registers: [o.registry],
    });
    new Gauge({
      name: 'cartero_dns_identity_cache_entries',
      help: 'Answers held by the cache of the DNS identity checks (at most 5000).',
      registers: [o.registry],
      collect() {
        this.set(o.resolver().cached);
      },
    });
  }

  /** Checks now and then every interval. */
  start(): Promise<FcrdnsCheck[]> {
    this.stopped = false;
    return this.runAndSchedule();
  }

  /** After a reload: forget the old addresses, check the new ones now, restart the interval. */
  reconfigure(): Promise<FcrdnsCheck[]> {
    this.epoch++;
    this.gauge.reset();
    this.last.clear();
    return this.runAndSchedule();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private runAndSchedule(): Promise<FcrdnsCheck[]> {
    clearTimeout(this.timer);
    const done = this.check();
    void done.finally(() => {
      if (this.stopped) return;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.runAndSchedule(), this.o.intervalMs());
      this.timer.unref();
    });
    return done;
  }

  /** One check of every pool address; reports and returns the results. */
  async check(): Promise<FcrdnsCheck[]> {
    const epoch = this.epoch;
    const resolver = this.o.resolver();
    const jobs = this.o
      .pools()
      .flatMap((p) =>
        p.addresses.map(async (a) => ({ pool: p.name, check: await checkFcrdns(resolver, a.ip, a.ehlo) })),
      );
    const results = await Promise.all(jobs);
    if (epoch !== this.epoch || this.stopped) return results.map((r) => r.check); // a reload's check reports
    for (const { pool, check: c } of results) {
      for (const r of FCRDNS_RESULTS) this.gauge.set({ pool, ip: c.ip, result: r }, r === c.result ? 1 : 0);
      const key = `${pool}/${c.ip}`;
      const before = this.last.get(key);
      this.last.set(key, c.result);
      if (before === c.result) continue;
      const fields = { event: 'pool.fcrdns', pool, ip: c.ip, ehlo: c.ehlo, ptr: c.ptr, result: c.result };
      if (c.result === 'Verified') this.o.log.info(fields, `${c.ip}: reverse DNS verified (${c.message})`);
      else
        this.o.log.warn(
          fields,
          `${c.ip}: reverse DNS ${c.result}: ${c.message}; receivers may reject or junk its mail`,
        );
    }
    return results.map((r) => r.check);
  }
}
