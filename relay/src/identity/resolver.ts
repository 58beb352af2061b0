/**
 * The lookups of the DNS identity checks (PTR, A/AAAA, TXT) through the relay's own resolvers
 * (`dns.servers`, `dns.timeout`): every query ends by the timeout whatever c-ares does, at most
 * MAX_CONCURRENT queries run at once (others wait their turn), and answers are reused for CACHE_TTL_MS
 * (temporary failures are not cached) in a cache of at most CACHE_MAX_ENTRIES names.
 */
import { promises as dnsPromises } from 'node:dns';
import { ConfigError } from '../errors.js';
import { TtlCache } from '../dns.js';
import { queryWithin, type DnsLookup } from '../dns-lookup.js';

export const MAX_CONCURRENT = 16;
export const CACHE_TTL_MS = 10_000;
export const CACHE_MAX_ENTRIES = 5_000;

export interface IdentityResolverOptions {
  /** `ip` or `ip:port`; the system resolvers when empty. */
  servers: string[];
  timeoutMs: number;
  cacheTtlMs?: number;
  cacheMaxEntries?: number;
  now?: () => number;
}

export class IdentityResolver {
  private readonly resolver: dnsPromises.Resolver;
  private readonly timeoutMs: number;
  private readonly cache: TtlCache<DnsLookup<unknown>>;
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(opts: IdentityResolverOptions) {
    this.timeoutMs = opts.timeoutMs;
    this.cache = new TtlCache(
      opts.cacheTtlMs ?? CACHE_TTL_MS,
      opts.cacheMaxEntries ?? CACHE_MAX_ENTRIES,
      opts.now ?? Date.now,
    );
    this.resolver = new dnsPromises.Resolver({
      timeout: Math.max(1, Math.ceil(opts.timeoutMs / 2)),
      tries: 2,
    });
    if (opts.servers.length) {
      try {
        this.resolver.setServers(opts.servers);
      } catch (e) {
        throw new ConfigError(
          '/dns/servers',
          `must be IP addresses, optionally with :port (${(e as Error).message})`,
        );
      }
    }
  }

  /** Names cached now (for tests and a metric). */
  get cached(): number {
    return this.cache.size;
  }

  /** PTR names of `ip`. */
  reverse(ip: string): Promise<DnsLookup<string>> {
    return this.cached_(`ptr ${ip}`, () => this.resolver.reverse(ip));
  }

  /** A and AAAA addresses of `name`: records when either has some; otherwise the more telling failure. */
  async addresses(name: string): Promise<DnsLookup<string>> {
    const [v4, v6] = await Promise.all([
      this.cached_(`a ${name}`, () => this.resolver.resolve4(name)),
      this.cached_(`aaaa ${name}`, () => this.resolver.resolve6(name)),
    ]);
    if (v4.ok || v6.ok)
      return { ok: true, records: [...(v4.ok ? v4.records : []), ...(v6.ok ? v6.records : [])] };
    if (v4.failure === 'temporary') return v4;
    if (v6.failure === 'temporary') return v6;
    return v4.failure === 'nxdomain' || v6.failure === 'nxdomain' ? { ...v4, failure: 'nxdomain' } : v4;
  }

  /** TXT records of `name`, each a list of strings. */
  txt(name: string): Promise<DnsLookup<string[]>> {
    return this.cached_(`txt ${name}`, () => this.resolver.resolveTxt(name));
  }

  /** Cancels queries in flight (they end as temporary failures). */
  cancel(): void {
    this.resolver.cancel();
  }

  private async cached_<T>(key: string, run: () => Promise<T[]>): Promise<DnsLookup<T>> {
    const hit = this.cache.get(key) as DnsLookup<T> | undefined;
    if (hit) return hit;
    const result = await this.limited(() => this.query(run));
    if (result.ok || result.failure !== 'temporary') this.cache.set(key, result);
    return result;
  }

  private async limited<T>(fn: () => Promise<T>): Promise<T> {
    while (this.running >= MAX_CONCURRENT) await new Promise<void>((r) => this.waiting.push(r));
    this.running++;
    try {
      return await fn();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }

  private query<T>(run: () => Promise<T[]>): Promise<DnsLookup<T>> {
    return queryWithin(run, this.timeoutMs);
  }
}
