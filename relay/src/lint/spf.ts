/**
 * The SPF check of the bulk-sender lint (ADR 014): does the envelope (MAIL FROM) domain's SPF record
 * authorise the addresses the tenant's mail leaves from? The evaluation itself (RFC 7208: include,
 * redirect, macros, the 10-lookup and 2-void-lookup limits) is mailauth's `spf`, given a resolver that asks
 * the relay's `dns.servers`. Around it, what keeps DATA cheap:
 * - results are cached per (domain, address): CACHE_TTL_MS for answers, TEMPERROR_TTL_MS for temperrors,
 *   at most `maxEntries` (oldest go first; `cartero_lint_spf_cache_entries`);
 * - concurrent checks of one pair share one evaluation, and at most MAX_INFLIGHT evaluations run at once
 *   (beyond, the message is not checked: `busy`);
 * - a check gives up after `timeoutMs` (temperror); the evaluation goes on and fills the cache.
 * The evaluator is injected (main.ts loads mailauth's), so tests and an image without it still work.
 */
import { promises as dnsPromises } from 'node:dns';
import { isIP } from 'node:net';
import { TtlCache } from '../dns.js';
import type { SpfResult } from './rules.js';

/** mailauth's `spf` (lib/spf/index.js), the part the relay uses. */
export type SpfEvaluator = (o: {
  sender: string;
  ip: string;
  helo?: string;
  mta?: string;
  resolver: (name: string, type: string) => Promise<unknown>;
}) => Promise<{ status: { result: string } }>;

/** How long an SPF answer is reused. */
export const CACHE_TTL_MS = 10 * 60_000;
/** How long a temperror is reused (so a broken DNS server is not asked for every message). */
export const TEMPERROR_TTL_MS = 30_000;
/** Evaluations running at once, at most. */
export const MAX_INFLIGHT = 256;
/** At most this many addresses of a pool are checked per message (the first ones of this relay's pool). */
export const MAX_ADDRESSES = 8;

const RESULTS: ReadonlySet<string> = new Set([
  'pass',
  'fail',
  'softfail',
  'neutral',
  'none',
  'permerror',
  'temperror',
]);

export interface SpfCheckerOptions {
  evaluate: SpfEvaluator;
  /** `dns.servers` (ip or ip:port); the system's resolvers when empty. */
  servers: string[];
  /** Limit of one check, as seen by the message (and of each DNS query). */
  timeoutMs: number;
  maxEntries?: number;
  now?: () => number;
  /** Told of every finished evaluation (not of cache hits): the metric. */
  onEvaluated?: (result: SpfResult | 'timeout') => void;
  /** The relay's host name, for the evaluator's comments (never sent anywhere). */
  hostname?: string;
}

export class SpfChecker {
  private readonly cache: TtlCache<{ result: SpfResult; at: number }>;
  private readonly inflight = new Map<string, Promise<SpfResult>>();
  private readonly resolver: dnsPromises.Resolver;
  private readonly now: () => number;

  constructor(private readonly o: SpfCheckerOptions) {
    this.now = o.now ?? Date.now;
    this.cache = new TtlCache(CACHE_TTL_MS, o.maxEntries ?? 10_000, this.now);
    this.resolver = new dnsPromises.Resolver({ timeout: Math.max(1, Math.ceil(o.timeoutMs / 2)), tries: 2 });
    if (o.servers.length) this.resolver.setServers(o.servers); // checked at load by MxResolver's twin
  }

  get cacheSize(): number {
    return this.cache.size;
  }

  /** How many evaluations run now. */
  get running(): number {
    return this.inflight.size;
  }

  /**
   * The SPF result for mail from `domain` leaving from `ip`, within `timeoutMs`: a cached one, the shared
   * evaluation in flight, or a new one. `undefined` when too many evaluations run already.
   */
  async check(domain: string, ip: string): Promise<SpfResult | undefined> {
    const key = `${domain.toLowerCase()} ${ip}`;
    const hit = this.cache.get(key);
    if (hit && (hit.result !== 'temperror' || this.now() - hit.at < TEMPERROR_TTL_MS)) return hit.result;
    let p = this.inflight.get(key);
    if (!p) {
      if (this.inflight.size >= MAX_INFLIGHT) return undefined;
      p = this.evaluate(domain, ip).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    let timer: NodeJS.Timeout | undefined;
    // not unref'd: a message waits on it, and it is cleared as soon as the answer comes
    const late = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.o.timeoutMs);
    });
    const r = await Promise.race([p, late]);
    clearTimeout(timer);
    if (r === 'timeout') {
      this.o.onEvaluated?.('timeout');
      return 'temperror';
    }
    return r;
  }

  private async evaluate(domain: string, ip: string): Promise<SpfResult> {
    let result: SpfResult;
    try {
      const r = await this.o.evaluate({
        sender: `postmaster@${domain}`,
        ip,
        ...(this.o.hostname ? { mta: this.o.hostname } : {}),
        resolver: (name, type) => this.resolver.resolve(name, type),
      });
      result = RESULTS.has(r.status.result) ? (r.status.result as SpfResult) : 'temperror';
    } catch {
      result = 'temperror';
    }
    this.cache.set(`${domain.toLowerCase()} ${ip}`, { result, at: this.now() });
    this.o.onEvaluated?.(result);
    return result;
  }

  /** Stops the DNS queries in flight (shutdown). */
  cancel(): void {
    this.resolver.cancel();
  }
}

/** The addresses to check for a tenant's pool: the literal IPs among them, at most MAX_ADDRESSES. */
export function addressesToCheck(pool: { addresses: { ip: string }[] } | undefined): string[] {
  return (pool?.addresses ?? [])
    .map((a) => a.ip)
    .filter((ip) => isIP(ip) !== 0)
    .slice(0, MAX_ADDRESSES);
}
