/**
 * Config resolution, the pure core of loading a relay config (part of the relay contract): from a parsed
 * document, the secrets it names (already read) and the environment to the typed RelayConfig, with every
 * rule the relay enforces. No file is read here (the relay's loader, relay/src/config.ts, reads the file
 * and the secrets; the operator passes its Secret's data, see validate.ts); building pools and shaping
 * happens in checkRuntime. The document's type after the schema check is ValidatedConfig (config-raw.ts);
 * the parts: resolve-tenants.ts (accounts, tenants), resolve-outbound.ts (IP pools, routes, the fleet's
 * rate-limit store), resolve-fields.ts (environment references, CIDRs, listener limits).
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import ipaddr from 'ipaddr.js';
import { ConfigError } from '../errors.js';
import { PoolManager } from '../pools.js';
import { Shaper } from '../shaping.js';
import type { ValidatedConfig } from './config-raw.js';
import { applySchema } from './config-schema.js';
import { DEFAULT_TENANT, type ListenerConfig, type RelayConfig } from './config-types.js';
import { parseDuration } from './duration.js';
import { expandEnv, listenerLimits, parseCidrs, type SecretReader } from './resolve-fields.js';
import { resolvePools, resolveRateLimitStore, resolveRouting } from './resolve-outbound.js';
import { resolveSenders } from './resolve-tenants.js';
import { resolveOutboundTls } from './resolve-tls.js';
import { resolveFeedback } from './resolve-feedback.js';

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
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc))
    throw new ConfigError(
      '/',
      `must be a mapping (key: value), not ${Array.isArray(doc) ? 'a list' : doc === null ? 'null' : `a ${typeof doc}`}`,
    );
  const invalid = applySchema(doc);
  if (invalid) throw invalid;
  // the schema accepted it and filled in its defaults: it has the shape ValidatedConfig derives from it
  const c = doc as ValidatedConfig;
  const root = path.resolve(input.baseDir, c.paths.root);
  const under = (p: string) => path.resolve(root, p);
  const secretsDir = under(c.paths.secrets);
  const tlsDir = under(c.paths.tls);
  // every secret read goes into the config's hash, in the order read
  const hasher = createHash('sha256');
  const readSecret: SecretReader = (dir, file, field) => {
    const b = input.secrets({
      dir,
      file,
      field,
      path: path.resolve(dir === 'tls' ? tlsDir : secretsDir, file),
    });
    hasher.update(field).update('\0').update(b).update('\0');
    return b;
  };
  const names = new Set<string>();
  const listeners: ListenerConfig[] = c.listeners.map((l, i) => {
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
    const { limits: own, ...rest } = l;
    return { ...rest, address, limits: listenerLimits({ ...c.limits, ...own }) };
  });
  const { accounts, tenants, tenantNetworks } = resolveSenders(c, readSecret);
  const ipPools = resolvePools(c.ipPools, env, !!input.fleetWide);
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
    events: {
      maxBytes: c.events.maxBytes,
      flushIntervalMs: parseDuration(c.events.flushInterval),
      maxBuffered: c.events.maxBuffered,
      concurrency: c.events.concurrency,
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
    routing: resolveRouting(c.routing, readSecret),
    dns: {
      servers: c.dns.servers ?? [],
      timeoutMs: parseDuration(c.dns.timeout),
      allowPrivateTargets: parseCidrs(c.dns.allowPrivateTargets, '/dns/allowPrivateTargets'),
      mxPort: c.dns.mxPort,
      identityCheckIntervalMs: parseDuration(c.dns.identityCheckInterval),
    },
    admin: {
      address: expandEnv(c.admin.address, '/admin/address', env),
      port: c.admin.port,
      ...(c.admin.tokenFile ? { token: readSecret('secrets', c.admin.tokenFile, '/admin/tokenFile') } : {}),
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
      ...(c.fleet.rateLimitStore
        ? { rateLimitStore: resolveRateLimitStore(c.fleet.rateLimitStore, env, readSecret) }
        : {}),
    },
    ...(c.peer
      ? {
          peer: {
            username: c.peer.username,
            password: readSecret('secrets', c.peer.passwordFile, '/peer/passwordFile'),
          },
        }
      : {}),
    outboundTls: resolveOutboundTls(c.outboundTls, readSecret),
    feedback: resolveFeedback(c, tenants, env, readSecret),
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
      cert: readSecret('tls', c.tls.certFile, '/tls/certFile'),
      key: readSecret('tls', c.tls.keyFile, '/tls/keyFile'),
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
