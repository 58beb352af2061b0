/**
 * Where mail for a domain goes: MX lookup (RFC 5321 §5.1) with null MX (RFC 7505), implicit MX,
 * address resolution, refusal of private targets, and a short-lived cache.
 */
import { queryWithin, type DnsLookup as Lookup } from './dns-lookup.js';
import { promises as dnsPromises } from 'node:dns';
import { domainToASCII } from 'node:url';
import ipaddr from 'ipaddr.js';
import { ConfigError } from './errors.js';

export type Cidr = [ipaddr.IPv4 | ipaddr.IPv6, number];

export interface DestinationHost {
  /** Lower-case host name without a trailing dot. */
  exchange: string;
  preference: number;
  /** IPv4 addresses first, then IPv6; never empty. */
  addresses: string[];
}

export type DestinationResult =
  /** Hosts to try in order: by preference, equal preferences shuffled. */
  | { kind: 'hosts'; hosts: DestinationHost[] }
  /**
   * Mail for the domain cannot be delivered: it does not exist (or is no valid name), it has a null MX
   * (RFC 7505), or none of its hosts is usable. The classifier (delivery/classify.ts) gives the status.
   */
  | { kind: 'permanent'; failure: 'nxdomain' | 'null-mx' | 'no-route'; reason: string }
  /** Try again later. */
  | { kind: 'temporary'; reason: string };

export interface MxResolverOptions {
  /** `ip` or `ip:port` (`[ipv6]:port`); the system resolvers when empty. */
  servers: string[];
  /** Limit for each DNS query. */
  timeoutMs: number;
  /** Targets in these ranges are used even though they are private. */
  allowPrivateTargets: Cidr[];
  /** How long a result is reused; 0 disables the cache. Default 60 s. */
  cacheTtlMs?: number;
  /** At most this many domains are cached. Default 10 000. */
  cacheMaxEntries?: number;
  /** Clock for the cache, in milliseconds. Default `Date.now`. */
  now?: () => number;
  /** Returns a number in [0, 1) to shuffle MX hosts of equal preference. Default `Math.random`. */
  random?: () => number;
}

/** Ranges (ipaddr.js names) mail is never sent to unless allow-listed. */
const REFUSED_RANGES: ReadonlySet<string> = new Set([
  'unspecified',
  'broadcast',
  'multicast',
  'linkLocal',
  'loopback',
  'carrierGradeNat',
  'private',
  'reserved',
  'uniqueLocal',
  'deprecatedSiteLocal',
  'discard',
]);

/** IPv6 /96 prefixes whose last 32 bits are an IPv4 address (mapped, translated, NAT64, compatible). */
const IPV4_EMBEDDING: Cidr[] = ['::ffff:0:0/96', '::ffff:0:0:0/96', '64:ff9b::/96', '::/96'].map((c) =>
  ipaddr.parseCIDR(c),
);

function embeddedIPv4(addr: ipaddr.IPv4 | ipaddr.IPv6): ipaddr.IPv4 | undefined {
  if (addr.kind() !== 'ipv6' || !IPV4_EMBEDDING.some((cidr) => addr.match(cidr))) return undefined;
  const [hi, lo] = (addr as ipaddr.IPv6).parts.slice(6);
  return new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
}

/**
 * True when mail must not go to `ip`: loopback, private (RFC 1918, unique-local), link-local, CGNAT,
 * unspecified, multicast, broadcast or reserved, including IPv4 embedded in IPv6, and not inside an
 * `allow` CIDR. Unparseable addresses are refused too.
 */
export function isPrivateTarget(ip: string | ipaddr.IPv4 | ipaddr.IPv6, allow: Cidr[]): boolean {
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    addr = typeof ip === 'string' ? ipaddr.parse(ip) : ip;
  } catch {
    return true;
  }
  const forms = [addr];
  const v4 = embeddedIPv4(addr);
  if (v4) forms.push(v4);
  if (!forms.some((a) => REFUSED_RANGES.has(a.range()))) return false;
  return !allow.some(([net, bits]) => forms.some((a) => a.kind() === net.kind() && a.match(net, bits)));
}

/** A map whose entries expire `ttlMs` after they are set, holding at most `maxEntries` (oldest go first). */
export class TtlCache<V> {
  private readonly entries = new Map<string, { value: V; expires: number }>();
  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (this.now() >= e.expires) {
      this.entries.delete(key);
      return undefined;
    }
    return e.value;
  }

  set(key: string, value: V): void {
    if (this.ttlMs <= 0 || this.maxEntries <= 0) return;
    this.entries.delete(key);
    while (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { value, expires: this.now() + this.ttlMs });
  }

  get size(): number {
    return this.entries.size;
  }

  clear(): void {
    this.entries.clear();
  }
}

/** At most this many MX hosts (the most preferred) are resolved and returned. */
const MAX_MX_HOSTS = 10;

const isNullExchange = (exchange: string) => exchange === '' || exchange === '.';
const normalizeHost = (name: string) => name.replace(/\.$/, '').toLowerCase();

/** Resolves a recipient domain to the hosts to deliver to. One instance per relay; results are cached. */
export class MxResolver {
  private readonly resolver: dnsPromises.Resolver;
  private readonly timeoutMs: number;
  private readonly allow: Cidr[];
  private readonly random: () => number;
  private readonly cache: TtlCache<DestinationResult>;
  private readonly inflight = new Map<string, Promise<DestinationResult>>();

  constructor(opts: MxResolverOptions) {
    this.timeoutMs = opts.timeoutMs;
    this.allow = opts.allowPrivateTargets;
    this.random = opts.random ?? Math.random;
    this.cache = new TtlCache(
      opts.cacheTtlMs ?? 60_000,
      opts.cacheMaxEntries ?? 10_000,
      opts.now ?? Date.now,
    );
    // Two attempts fit in the limit; `query` enforces the limit itself, as c-ares stretches its timeouts.
    this.resolver = new dnsPromises.Resolver({
      timeout: Math.max(1, Math.ceil(opts.timeoutMs / 2)),
      tries: 2,
    });
    if (opts.servers.length > 0) {
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

  /**
   * Where to deliver mail for `domain`. Successful and permanent results are cached; concurrent calls for
   * one domain share one lookup.
   */
  async resolveDestination(domain: string): Promise<DestinationResult> {
    const name = domainToASCII(normalizeHost(domain.trim()));
    if (name === '') {
      return { kind: 'permanent', failure: 'nxdomain', reason: `${domain}: not a valid domain name` };
    }
    const cached = this.cache.get(name);
    if (cached) return this.present(cached);
    let pending = this.inflight.get(name);
    if (!pending) {
      pending = this.lookup(name)
        .then((result) => {
          if (result.kind !== 'temporary') this.cache.set(name, result);
          return result;
        })
        .finally(() => this.inflight.delete(name));
      this.inflight.set(name, pending);
    }
    return this.present(await pending);
  }

  /** Drops every cached result. */
  clearCache(): void {
    this.cache.clear();
  }

  /** Cancels queries in flight; their lookups end as temporary failures. */
  cancel(): void {
    this.resolver.cancel();
  }

  private async lookup(domain: string): Promise<DestinationResult> {
    const mx = await this.query(domain, (n) => this.resolver.resolveMx(n));
    let candidates: { exchange: string; preference: number }[];
    if (mx.ok) {
      const real = mx.records.filter((r) => !isNullExchange(r.exchange));
      if (real.length === 0) {
        return {
          kind: 'permanent',
          failure: 'null-mx',
          reason: `${domain} does not accept mail (null MX, RFC 7505)`,
        };
      }
      const best = new Map<string, number>();
      for (const r of real) {
        const host = normalizeHost(r.exchange);
        best.set(host, Math.min(r.priority, best.get(host) ?? Infinity));
      }
      candidates = [...best]
        .map(([exchange, preference]) => ({ exchange, preference }))
        .sort((a, b) => a.preference - b.preference)
        .slice(0, MAX_MX_HOSTS);
    } else if (mx.failure === 'nodata') {
      candidates = [{ exchange: domain, preference: 0 }]; // implicit MX, RFC 5321 §5.1
    } else if (mx.failure === 'nxdomain') {
      return {
        kind: 'permanent',
        failure: 'nxdomain',
        reason: `${domain}: domain does not exist (NXDOMAIN)`,
      };
    } else if (mx.failure === 'badname') {
      return { kind: 'permanent', failure: 'nxdomain', reason: `${domain}: not a valid domain name` };
    } else {
      return { kind: 'temporary', reason: `MX lookup for ${domain} failed: ${mx.code}` };
    }

    const resolved = await Promise.all(candidates.map((c) => this.addresses(c.exchange)));
    const hosts: DestinationHost[] = [];
    const failed: string[] = [];
    const refused: string[] = [];
    candidates.forEach((c, i) => {
      const { addresses, temporary } = resolved[i];
      if (addresses.length === 0 && temporary) failed.push(`${c.exchange}: ${temporary}`);
      const usable = addresses.filter((a) => {
        const bad = isPrivateTarget(a, this.allow);
        if (bad) refused.push(`${a} (${c.exchange})`);
        return !bad;
      });
      if (usable.length > 0) hosts.push({ ...c, addresses: usable });
    });

    if (hosts.length > 0) return { kind: 'hosts', hosts };
    if (failed.length > 0) {
      return {
        kind: 'temporary',
        reason: `could not resolve mail hosts of ${domain}: ${failed.join(', ')}`,
      };
    }
    if (refused.length > 0) {
      return {
        kind: 'permanent',
        failure: 'no-route',
        reason: `no usable mail host for ${domain}: refused: private address ${refused.join(', ')}`,
      };
    }
    const what = mx.ok
      ? `no MX host of ${domain} (${candidates.map((c) => c.exchange).join(', ')}) has an address`
      : `${domain} has no MX, A or AAAA record`;
    return { kind: 'permanent', failure: 'no-route', reason: what };
  }

  /** A then AAAA addresses of `host`; `temporary` names the error when a lookup may succeed later. */
  private async addresses(host: string): Promise<{ addresses: string[]; temporary?: string }> {
    const [v4, v6] = await Promise.all([
      this.query(host, (n) => this.resolver.resolve4(n)),
      this.query(host, (n) => this.resolver.resolve6(n)),
    ]);
    const addresses = [...new Set([...(v4.ok ? v4.records : []), ...(v6.ok ? v6.records : [])])];
    const temporary = [v4, v6].map((r) => (!r.ok && r.failure === 'temporary' ? r.code : '')).find(Boolean);
    return { addresses, temporary };
  }

  /** Runs one query, failing with ETIMEOUT after `timeoutMs` whatever c-ares does. */
  private query<T>(name: string, run: (name: string) => Promise<T[]>): Promise<Lookup<T>> {
    return queryWithin(() => run(name), this.timeoutMs);
  }

  /** A copy of `result` with hosts of equal preference shuffled. */
  private present(result: DestinationResult): DestinationResult {
    if (result.kind !== 'hosts') return { ...result };
    const hosts = result.hosts.map((h) => ({ ...h, addresses: [...h.addresses] }));
    for (let start = 0; start < hosts.length;) {
      let end = start + 1;
      while (end < hosts.length && hosts[end].preference === hosts[start].preference) end++;
      for (let i = end - 1; i > start; i--) {
        const j = start + Math.floor(this.random() * (i - start + 1));
        [hosts[i], hosts[j]] = [hosts[j], hosts[i]];
      }
      start = end;
    }
    return { kind: 'hosts', hosts };
  }
}
