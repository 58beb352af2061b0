/**
 * Config resolution, the pure core of loading a relay config (part of the relay contract): from a parsed
 * document, the secrets it names (already read) and the environment to the typed RelayConfig, with every
 * rule the relay enforces. No file is read here (the relay's loader, relay/src/config.ts, reads the file
 * and the secrets; the operator passes its Secret's data, see validate.ts); building pools and shaping
 * happens in checkRuntime.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import ipaddr from 'ipaddr.js';
import { ConfigError } from '../errors.js';
import { PoolManager } from '../pools.js';
import { Shaper } from '../shaping.js';
import { applySchema } from './config-schema.js';
import {
  DEFAULT_TENANT,
  type HostRoute,
  type ListenerConfig,
  type ListenerLimits,
  type OutboundTls,
  type PoolConfigResolved,
  type RelayConfig,
  type TenantConfig,
} from './config-types.js';
import { parseDuration } from './duration.js';

/** A secret file the config names: in the secrets folder (accounts, routes, peer, admin token) or the TLS one. */
export interface SecretRef {
  dir: 'secrets' | 'tls';
  /** As the config writes it (relative to its folder). */
  file: string;
  /** The config field that names it, e.g. `/accounts/0/passwordFile`. */
  field: string;
  /** Where the relay reads it: the folder (paths.root + paths.secrets or paths.tls) and `file`, resolved. */
  path: string;
}
/**
 * The content of a secret (a trailing newline is not part of it; empty is refused): already read by the
 * caller. Throws a ConfigError for `ref.field` when it does not have it.
 */
export type SecretSource = (ref: SecretRef) => Buffer;

export interface ResolveInput {
  /** The folder of the config file: paths.root is relative to it. */
  baseDir: string;
  /** For `${NAME}` references (admin and listener addresses) and the pod's POD_NAME / NODE_NAME. */
  env: NodeJS.ProcessEnv;
  secrets: SecretSource;
  /**
   * Keep every address of an IP pool (the fleet's view of the shared file) instead of only those of this
   * pod (POD_NAME) or node (NODE_NAME): for checking a config rendered for a whole fleet.
   */
  fleetWide?: boolean;
}

/** Expands `${NAME}` references to environment variables in a string; an unset one is an error. */
function expandEnv(value: string, field: string, env: NodeJS.ProcessEnv): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const v = env[name];
    if (v === undefined || v === '')
      throw new ConfigError(field, `refers to environment variable ${name}, which is not set`);
    return v;
  });
}

function parseCidrs(list: string[], field: string): [ipaddr.IPv4 | ipaddr.IPv6, number][] {
  return list.map((c, i) => {
    try {
      return c.includes('/')
        ? ipaddr.parseCIDR(c)
        : (() => {
            const a = ipaddr.parse(c);
            return [a, a.kind() === 'ipv4' ? 32 : 128] as [ipaddr.IPv4 | ipaddr.IPv6, number];
          })();
    } catch {
      throw new ConfigError(`${field}/${i}`, `not a CIDR or IP address: ${JSON.stringify(c)}`);
    }
  });
}

/** A listener's client limits from the top-level ones with its own overrides merged in. */
function listenerLimits(l: {
  maxConnectionsPerClient: number;
  connectionRatePerClient: string;
  commandTimeout: string;
  idleTimeout: string;
  minDataRate: number;
}): ListenerLimits {
  const rate = /^([0-9]+)\/(s|m|h|d)$/.exec(l.connectionRatePerClient);
  return {
    maxConnectionsPerClient: l.maxConnectionsPerClient,
    ...(rate
      ? { connectionRatePerClient: { count: Number(rate[1]), perMs: parseDuration(`1${rate[2]}`) } }
      : {}),
    commandTimeoutMs: parseDuration(l.commandTimeout),
    idleTimeoutMs: parseDuration(l.idleTimeout),
    minDataRate: l.minDataRate,
  };
}

/**
 * Validates a parsed config document (applying the schema's defaults in place) and resolves it into the
 * config the relay runs: the schema, then every rule across fields (names defined twice, `auth: required`
 * without an account, reservedForTrusted below maxConnections, retry max not below initial, pools and
 * tenants that refer to each other, addresses, networks, ...). Reads no file: secrets come from
 * `input.secrets`, `${NAME}` references from `input.env`. What the relay builds from the result is checked
 * by checkRuntime. Throws the first ConfigError (field and reason).
 */
export function resolveRelayConfig(doc: unknown, input: ResolveInput): RelayConfig {
  const { env } = input;
  const hasher = createHash('sha256');
  const sec = (dir: SecretRef['dir'], folder: string, file: string, field: string): Buffer => {
    const b = input.secrets({ dir, file, field, path: path.resolve(folder, file) });
    hasher.update(field).update('\0').update(b).update('\0');
    return b;
  };
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc))
    throw new ConfigError(
      '/',
      `must be a mapping (key: value), not ${Array.isArray(doc) ? 'a list' : doc === null ? 'null' : `a ${typeof doc}`}`,
    );
  const invalid = applySchema(doc);
  if (invalid) throw invalid;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const c = doc as any;
  const root = path.resolve(input.baseDir, c.paths.root);
  const under = (p: string) => path.resolve(root, p);
  const secretsDir = under(c.paths.secrets);
  const rateLimitStore = (r: {
    type: 'redis';
    address: string;
    username?: string;
    passwordFile?: string;
    keyPrefix: string;
    timeout: string;
    maxInFlight: number;
  }): NonNullable<RelayConfig['fleet']['rateLimitStore']> => {
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
        ? {
            password: sec('secrets', secretsDir, r.passwordFile, `${f}/passwordFile`).toString('utf8').trim(),
          }
        : {}),
      keyPrefix: r.keyPrefix,
      timeoutMs: parseDuration(r.timeout),
      maxInFlight: r.maxInFlight,
    };
  };
  const tlsDir = under(c.paths.tls);
  const names = new Set<string>();
  const listeners: ListenerConfig[] = c.listeners.map((l: ListenerConfig, i: number) => {
    if (names.has(l.name)) throw new ConfigError(`/listeners/${i}/name`, `duplicate listener name ${l.name}`);
    names.add(l.name);
    const address = expandEnv(l.address, `/listeners/${i}/address`, env);
    if (!ipaddr.isValid(address))
      throw new ConfigError(`/listeners/${i}/address`, `not an IP address: ${JSON.stringify(address)}`);
    if (l.tls !== 'none' && !c.tls)
      throw new ConfigError(
        `/listeners/${i}/tls`,
        `tls: ${l.tls} needs the top-level tls section (certFile, keyFile)`,
      );
    const { limits: own, ...rest } = l as ListenerConfig & { limits?: Record<string, unknown> };
    return { ...rest, address, limits: listenerLimits({ ...c.limits, ...own }) };
  });
  const accounts = new Map<string, { password: Buffer; tenant: string }>();
  c.accounts.forEach((a: { username: string; passwordFile: string; tenant: string }, i: number) => {
    if (accounts.has(a.username))
      throw new ConfigError(`/accounts/${i}/username`, `duplicate account ${a.username}`);
    accounts.set(a.username, {
      password: sec('secrets', secretsDir, a.passwordFile, `/accounts/${i}/passwordFile`),
      tenant: a.tenant,
    });
  });
  const tenants = new Map<string, TenantConfig>();
  const tenantNetworks: RelayConfig['tenantNetworks'] = [];
  const poolNames = new Set<string>((c.ipPools as { name: string }[]).map((p) => p.name));
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  (c.tenants as any[]).forEach((t, i) => {
    const f = `/tenants/${i}`;
    if (tenants.has(t.name)) throw new ConfigError(`${f}/name`, `tenant ${t.name} is defined twice`);
    if (t.ipPool !== undefined && !poolNames.has(t.ipPool))
      throw new ConfigError(`${f}/ipPool`, `no ip pool named ${JSON.stringify(t.ipPool)} in /ipPools`);
    if (
      t.retry &&
      parseDuration(t.retry.max ?? c.queue.retry.max) <
        parseDuration(t.retry.initial ?? c.queue.retry.initial)
    )
      throw new ConfigError(`${f}/retry/max`, 'must not be shorter than retry.initial');
    if (t.bounceRate.pause < t.bounceRate.warn)
      throw new ConfigError(`${f}/bounceRate/pause`, 'must not be below bounceRate.warn');
    t.rateLimits.forEach((r: string, k: number) => {
      if (t.rateLimits.findIndex((x: string) => x.split('/')[1] === r.split('/')[1]) !== k)
        throw new ConfigError(`${f}/rateLimits/${k}`, `a second limit per ${r.split('/')[1]}`);
    });
    t.accounts.forEach((a: { username: string; passwordFile: string }, k: number) => {
      if (accounts.has(a.username))
        throw new ConfigError(`${f}/accounts/${k}/username`, `duplicate account ${a.username}`);
      accounts.set(a.username, {
        password: sec('secrets', secretsDir, a.passwordFile, `${f}/accounts/${k}/passwordFile`),
        tenant: t.name,
      });
    });
    parseCidrs(t.trustedNetworks, `${f}/trustedNetworks`).forEach((net) =>
      tenantNetworks.push({ net, tenant: t.name }),
    );
    tenants.set(t.name, {
      name: t.name,
      senderDomains: t.senderDomains.map((d: string) => d.toLowerCase()),
      rateLimits: t.rateLimits,
      ...(t.burst !== undefined ? { burst: t.burst } : {}),
      ...(t.ipPool !== undefined ? { ipPool: t.ipPool } : {}),
      ...(t.retry
        ? {
            retry: {
              initialMs: parseDuration(t.retry.initial ?? c.queue.retry.initial),
              factor: t.retry.factor ?? c.queue.retry.factor,
              maxMs: parseDuration(t.retry.max ?? c.queue.retry.max),
            },
          }
        : {}),
      ...(t.maxAge ? { maxAgeMs: parseDuration(t.maxAge) } : {}),
      quota: { ...t.quota },
      bounceRate: {
        warn: t.bounceRate.warn,
        pause: t.bounceRate.pause,
        windowMs: parseDuration(t.bounceRate.window),
        minVolume: t.bounceRate.minVolume,
        cooldownMs: parseDuration(t.bounceRate.cooldown),
      },
      suppression: { enabled: t.suppression.enabled, ttlMs: parseDuration(t.suppression.ttl) },
    });
  });
  if (c.peer && accounts.has(c.peer.username))
    throw new ConfigError('/peer/username', `${c.peer.username} is also a tenant account`);
  for (const [user, a] of accounts) {
    if (tenants.size > 0 && a.tenant !== DEFAULT_TENANT && !tenants.has(a.tenant)) {
      const i = (c.accounts as { username: string }[]).findIndex((x) => x.username === user);
      throw new ConfigError(
        `/accounts/${i}/tenant`,
        `no tenant named ${JSON.stringify(a.tenant)} in /tenants`,
      );
    }
  }
  if (!tenants.has(DEFAULT_TENANT)) {
    tenants.set(DEFAULT_TENANT, {
      name: DEFAULT_TENANT,
      senderDomains: [],
      rateLimits: [],
      quota: {},
      bounceRate: { warn: 0.05, pause: 0.1, windowMs: 3_600_000, minVolume: 100, cooldownMs: 3_600_000 },
      suppression: { enabled: true, ttlMs: 30 * 86_400_000 },
    });
  }
  // most specific network first, so a tenant's /32 wins over a /8
  tenantNetworks.sort((a, b) => b.net[1] - a.net[1]);
  const poolSeen = new Set<string>();
  const ipSeen = new Map<string, string>();
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const ipPools: PoolConfigResolved[] = (c.ipPools as any[]).map((p, i) => {
    if (poolSeen.has(p.name)) throw new ConfigError(`/ipPools/${i}/name`, `pool ${p.name} is defined twice`);
    poolSeen.add(p.name);
    p.addresses.forEach((a: { ip: string; pod?: string }, k: number) => {
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
      (a: { pod?: string; node?: string }) =>
        input.fleetWide ||
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
    const addresses = mine.map(({ pod: _pod, node: _node, ...a }: { pod?: string; node?: string }) => a);
    return { name: p.name, addresses, ...(p.warmup ? { warmup: p.warmup } : {}) };
  });
  const hostRoute = (
    r: {
      host: string;
      port: number;
      tls: OutboundTls;
      credentials?: { username: string; passwordFile: string };
    },
    field: string,
  ): HostRoute => ({
    host: r.host,
    port: r.port,
    tls: r.tls,
    ...(r.credentials
      ? {
          credentials: {
            username: r.credentials.username,
            password: sec(
              'secrets',
              secretsDir,
              r.credentials.passwordFile,
              `${field}/credentials/passwordFile`,
            ).toString('utf8'),
          },
        }
      : {}),
  });
  const retry = c.queue.retry;
  const cfg: RelayConfig = {
    hostname: c.hostname,
    spoolDir: under(c.paths.spool),
    listeners,
    trustedNetworks: parseCidrs(c.trustedNetworks, '/trustedNetworks'),
    accounts,
    limits: {
      maxMessageSize: c.limits.maxMessageSize,
      maxRecipients: c.limits.maxRecipients,
      maxConnections: c.limits.maxConnections,
      idleTimeoutMs: parseDuration(c.limits.idleTimeout),
      maxReceivedHeaders: c.limits.maxReceivedHeaders,
      maxHeaderLine: c.limits.maxHeaderLine,
      maxHeaderSize: c.limits.maxHeaderSize,
      greetingDelayMs: parseDuration(c.limits.greetingDelay),
      reservedForTrusted: c.limits.reservedForTrusted ?? Math.floor(c.limits.maxConnections / 10),
      stress: {
        threshold: c.limits.stress.threshold,
        commandTimeoutMs: parseDuration(c.limits.stress.commandTimeout),
        idleTimeoutMs: parseDuration(c.limits.stress.idleTimeout),
      },
      auth: {
        failuresPerConnection: c.limits.auth.failuresPerConnection,
        failureDelayMs: parseDuration(c.limits.auth.failureDelay),
        maxFailureDelayMs: parseDuration(c.limits.auth.maxFailureDelay),
        clientFailures: c.limits.auth.clientFailures,
        accountFailures: c.limits.auth.accountFailures,
        windowMs: parseDuration(c.limits.auth.window),
        lockoutMs: parseDuration(c.limits.auth.lockout),
      },
    },
    queue: {
      maxMessages: c.queue.maxMessages,
      minFreeBytes: c.queue.minFreeBytes,
      retry: {
        initialMs: parseDuration(retry.initial),
        factor: retry.factor,
        maxMs: parseDuration(retry.max),
      },
      maxAgeMs: parseDuration(c.queue.maxAge),
      ...(c.queue.delayWarningAfter ? { delayWarningAfterMs: parseDuration(c.queue.delayWarningAfter) } : {}),
    },
    delivery: {
      concurrency: c.delivery.concurrency,
      perDestinationConcurrency: c.delivery.perDestinationConcurrency,
      connectTimeoutMs: parseDuration(c.delivery.connectTimeout),
      commandTimeoutMs: parseDuration(c.delivery.commandTimeout),
      connectionIdleMs: parseDuration(c.delivery.connectionIdle),
      maxMessagesPerConnection: c.delivery.maxMessagesPerConnection,
    },
    routing: {
      default:
        c.routing.default.type === 'smarthost'
          ? {
              type: 'smarthost',
              smarthost: hostRoute(c.routing.default.smarthost, '/routing/default/smarthost'),
            }
          : { type: 'mx' },
      domains: c.routing.domains.map(
        (d: { domain: string } & Parameters<typeof hostRoute>[0], i: number) => ({
          domain: d.domain.toLowerCase(),
          ...hostRoute(d, `/routing/domains/${i}`),
        }),
      ),
      backups: c.routing.backups.map((b: Parameters<typeof hostRoute>[0], i: number) =>
        hostRoute(b, `/routing/backups/${i}`),
      ),
    },
    dns: {
      servers: c.dns.servers ?? [],
      timeoutMs: parseDuration(c.dns.timeout),
      allowPrivateTargets: parseCidrs(c.dns.allowPrivateTargets, '/dns/allowPrivateTargets'),
      mxPort: c.dns.mxPort,
    },
    admin: {
      address: expandEnv(c.admin.address, '/admin/address', env),
      port: c.admin.port,
      ...(c.admin.tokenFile
        ? { token: sec('secrets', secretsDir, c.admin.tokenFile, '/admin/tokenFile') }
        : {}),
    },
    tenants,
    tenantNetworks: [
      ...tenantNetworks,
      ...parseCidrs(c.trustedNetworks, '/trustedNetworks').map((net) => ({ net, tenant: DEFAULT_TENANT })),
    ],
    ipPools,
    shaping: {
      // Without its own figure, the shaping default follows delivery.perDestinationConcurrency (the ceiling
      // per destination): raising that ceiling raises what a destination without a rule gets.
      defaults: {
        ...c.shaping.defaults,
        maxConnections: c.shaping.defaults.maxConnections ?? c.delivery.perDestinationConcurrency,
      },
      rules: c.shaping.rules,
      backoff: {
        initialMs: parseDuration(c.shaping.backoff.initial),
        maxMs: parseDuration(c.shaping.backoff.max),
      },
    },
    fleet: {
      rateLimitShare: c.fleet.rateLimitShare,
      ...(c.fleet.revision ? { revision: c.fleet.revision } : {}),
      ...(c.fleet.rateLimitStore ? { rateLimitStore: rateLimitStore(c.fleet.rateLimitStore) } : {}),
    },
    ...(c.peer
      ? {
          peer: {
            username: c.peer.username,
            password: sec('secrets', secretsDir, c.peer.passwordFile, '/peer/passwordFile'),
          },
        }
      : {}),
    hash: '',
    watchPaths: [secretsDir, tlsDir],
    gracePeriodMs: parseDuration(c.shutdown.gracePeriod),
    logLevel: c.logging.level,
  };
  cfg.dns.servers.forEach((srv, i) => {
    const m = /^\[([^\]]+)\](?::(\d+))?$|^([^:]+)(?::(\d+))?$|^([0-9a-fA-F:]+)$/.exec(srv);
    const ip = m?.[1] ?? m?.[3] ?? m?.[5];
    const port = Number(m?.[2] ?? m?.[4] ?? 53);
    if (!ip || !ipaddr.isValid(ip) || !(port >= 1 && port <= 65535)) {
      throw new ConfigError(
        `/dns/servers/${i}`,
        `must be an IP address, optionally with :port (IPv6 as [addr]:port): ${JSON.stringify(srv)}`,
      );
    }
  });
  listeners.forEach((l, i) => {
    if (l.auth === 'required' && accounts.size === 0)
      throw new ConfigError(`/listeners/${i}/auth`, 'auth: required needs at least one entry in /accounts');
  });
  if (cfg.limits.reservedForTrusted >= cfg.limits.maxConnections)
    throw new ConfigError('/limits/reservedForTrusted', 'must be below /limits/maxConnections');
  if (cfg.limits.auth.maxFailureDelayMs < cfg.limits.auth.failureDelayMs)
    throw new ConfigError(
      '/limits/auth/maxFailureDelay',
      'must not be shorter than /limits/auth/failureDelay',
    );
  if (cfg.queue.retry.maxMs < cfg.queue.retry.initialMs)
    throw new ConfigError('/queue/retry/max', 'must not be shorter than /queue/retry/initial');
  if (c.tls) {
    cfg.tls = {
      cert: sec('tls', tlsDir, c.tls.certFile, '/tls/certFile'),
      key: sec('tls', tlsDir, c.tls.keyFile, '/tls/keyFile'),
    };
  }
  cfg.hash = hasher.update(JSON.stringify(doc)).digest('hex');
  return cfg;
}

/**
 * What the relay builds from a resolved config at start and at every reload must not fail later: a config
 * that passes resolveRelayConfig but not this would pass --check, then fail to start (or be refused at
 * each reload). Throws a ConfigError for /ipPools or /shaping.
 */
export function checkRuntime(cfg: Pick<RelayConfig, 'ipPools' | 'shaping'>): void {
  try {
    new PoolManager(cfg.ipPools, Date.now);
  } catch (e) {
    throw new ConfigError('/ipPools', (e as Error).message);
  }
  try {
    new Shaper(cfg.shaping, Date.now);
  } catch (e) {
    throw new ConfigError('/shaping', (e as Error).message);
  }
}
