/**
 * Config resolution (resolve.ts) of how mail leaves: the IP pools (each relay of a fleet keeps the
 * addresses of its own pod or node), the routes (smarthost, per-domain routes, backups) and the fleet's
 * shared rate-limit store.
 */
import ipaddr from 'ipaddr.js';
import { ConfigError } from '../errors.js';
import type { RawHostRoute, RawPool, RawRateLimitStore, RawRouting } from './config-raw.js';
import type { HostRoute, PoolConfigResolved, RelayConfig } from './config-types.js';
import { parseDuration } from './duration.js';
import { expandEnv, type SecretReader } from './resolve-fields.js';

/**
 * The pools, each with the addresses this relay uses: those allocated to its pod (env POD_NAME) and
 * node (env NODE_NAME), or every address with `fleetWide`.
 */
export function resolvePools(
  pools: RawPool[],
  env: NodeJS.ProcessEnv,
  fleetWide: boolean,
): PoolConfigResolved[] {
  const poolSeen = new Set<string>();
  const ipSeen = new Map<string, string>();
  return pools.map((p, i) => {
    if (poolSeen.has(p.name)) throw new ConfigError(`/ipPools/${i}/name`, `pool ${p.name} is defined twice`);
    poolSeen.add(p.name);
    p.addresses.forEach((a, k) => {
      if (!ipaddr.isValid(a.ip))
        throw new ConfigError(
          `/ipPools/${i}/addresses/${k}/ip`,
          `not an IP address: ${JSON.stringify(a.ip)}`,
        );
      const other = ipSeen.get(a.ip);
      if (other)
        throw new ConfigError(`/ipPools/${i}/addresses/${k}/ip`, `${a.ip} is already in pool ${other}`);
      ipSeen.set(a.ip, p.name);
    });
    if (p.warmup) {
      // Date.parse rolls 2024-02-30 over to March 1st: only a date that reads back the same is valid
      const start = Date.parse(`${p.warmup.start}T00:00:00Z`);
      if (Number.isNaN(start) || new Date(start).toISOString().slice(0, 10) !== p.warmup.start)
        throw new ConfigError(`/ipPools/${i}/warmup/start`, 'not a valid date');
    }
    // A fleet shares one config: each relay keeps the addresses allocated to its own pod name.
    const mine = p.addresses.filter(
      (a) =>
        fleetWide ||
        ((a.pod === undefined || a.pod === env.POD_NAME) &&
          (a.node === undefined || a.node === env.NODE_NAME)),
    );
    if (mine.length === 0)
      throw new ConfigError(
        `/ipPools/${i}/addresses`,
        env.POD_NAME || env.NODE_NAME
          ? `no address of pool ${p.name} is allocated to pod ${env.POD_NAME ?? '(unset)'} on node ${env.NODE_NAME ?? '(unset)'}`
          : `every address of pool ${p.name} names a pod or a node, and POD_NAME and NODE_NAME are not set`,
      );
    const addresses = mine.map(({ pod: _pod, node: _node, ...a }) => a);
    return { name: p.name, addresses, ...(p.warmup ? { warmup: p.warmup } : {}) };
  });
}

/** routing: the default route (MX or a smarthost), the per-domain routes and the backups, in that order. */
export function resolveRouting(r: RawRouting, readSecret: SecretReader): RelayConfig['routing'] {
  const route = (h: RawHostRoute, field: string): HostRoute => ({
    host: h.host,
    port: h.port,
    tls: h.tls,
    ...(h.credentials
      ? {
          credentials: {
            username: h.credentials.username,
            password: readSecret(
              'secrets',
              h.credentials.passwordFile,
              `${field}/credentials/passwordFile`,
            ).toString('utf8'),
          },
        }
      : {}),
  });
  const d = r.default;
  return {
    default:
      // the schema requires `smarthost` with `type: smarthost` (its if/then)
      d.type === 'smarthost'
        ? { type: 'smarthost', smarthost: route(d.smarthost!, '/routing/default/smarthost') }
        : { type: 'mx' },
    domains: r.domains.map((x, i) => ({
      domain: x.domain.toLowerCase(),
      ...route(x, `/routing/domains/${i}`),
    })),
    backups: r.backups.map((b, i) => route(b, `/routing/backups/${i}`)),
  };
}

/** fleet.rateLimitStore: the Redis address (environment references expanded) and its password. */
export function resolveRateLimitStore(
  r: RawRateLimitStore,
  env: NodeJS.ProcessEnv,
  readSecret: SecretReader,
): NonNullable<RelayConfig['fleet']['rateLimitStore']> {
  const f = '/fleet/rateLimitStore';
  const address = expandEnv(r.address, `${f}/address`, env);
  const m = /^\[([0-9a-fA-F:.]+)\](?::(\d{1,5}))?$|^([A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(address);
  const host = m?.[1] ?? m?.[3];
  const port = Number(m?.[2] ?? m?.[4] ?? 6379);
  if (!host || !(port >= 1 && port <= 65535))
    throw new ConfigError(`${f}/address`, `not host:port: ${JSON.stringify(address)}`);
  return {
    type: r.type,
    host,
    port,
    ...(r.username ? { username: r.username } : {}),
    ...(r.passwordFile
      ? { password: readSecret('secrets', r.passwordFile, `${f}/passwordFile`).toString('utf8').trim() }
      : {}),
    keyPrefix: r.keyPrefix,
    timeoutMs: parseDuration(r.timeout),
    maxInFlight: r.maxInFlight,
  };
}
