/**
 * The relay config document the operator renders for an SmtpRelay (CONFIG_SCHEMA of
 * relay/src/contract/config-schema.ts) and the data of the operator-owned Secret it names: pure, no I/O.
 * test/unit/operator-builders.test.ts covers it without an API server; config-check.ts runs the relay's
 * own validation on the result before it is applied.
 */
import { createHash } from 'node:crypto';
import type { IpPool, SmtpRelay, SmtpRelaySpec } from '../api/types.js';
import type { Problem } from '../conditions.js';
import {
  ADMIN_PORT,
  DEFAULT_LISTENERS,
  MOUNTS,
  PEER_USERNAME,
  containerPortOf,
  type Tenant,
} from '../constants.js';
import { CONFIG_SCHEMA, parseDuration } from '../../../relay/src/contract/index.js';
import { renderDkim } from './dkim.js';
import { renderWebhooks } from './webhooks.js';
import { renderOutboundTls } from './outbound-tls.js';
import { renderFeedback, renderTenantFeedback } from './feedback.js';

/** Credentials the reconciler read from the Secrets an SmtpRelay names (`credentialsSecret`). */
export interface Credentials {
  username: string;
  password: string;
}

/** One allocated egress address (from an IpPool's status) for one pod of this relay. */
export interface Allocation {
  pool: string;
  ip: string;
  pod: string;
}

export interface BuildInput {
  relay: SmtpRelay;
  /** Image when the spec has none: the one the operator was installed with. */
  defaultImage: string;
  /** Secrets the spec names, by Secret name; a missing one is absent. */
  credentials: Map<string, Credentials>;
  /** The pools the tenants name, by name; a missing one is absent. */
  pools: Map<string, IpPool>;
  /** Addresses allocated to this relay's pods. */
  allocations: Allocation[];
  /** Kept in the operator-owned Secret across reconciles; generated once. */
  adminToken: string;
  peerPassword: string;
  /** Replicas the relay config is rendered for (rate-limit shares). */
  replicas: number;
  /** PEM private keys of the tenants' DKIM keys, by `<Secret>/<key>` (dkim.ts, dkimRef). */
  dkimKeys?: Map<string, string>;
  /** Signing keys of the tenants' webhook endpoints, by `<Secret>/<key>` (webhooks.ts, webhookRef). */
  webhookKeys?: Map<string, string>;
  /** The CA certificates of spec.outboundTls.caSecretRef (outbound-tls.ts), when found. */
  outboundCa?: string;
  /** The return-path token key (feedback.ts), kept in the operator-owned Secret; generated once. */
  feedbackKey?: string;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

function rateList(r: Tenant['rateLimits']): string[] {
  if (!r) return [];
  const out: string[] = [];
  if (r.perSecond) out.push(`${r.perSecond}/s`);
  if (r.perMinute) out.push(`${r.perMinute}/m`);
  if (r.perHour) out.push(`${r.perHour}/h`);
  if (r.perDay) out.push(`${r.perDay}/d`);
  return out;
}

/** Secret file names in the operator-owned Secret. */
export const secretKeys = {
  admin: 'admin.token',
  peer: 'peer.password',
  tenant: (t: string) => `tenant-${t}.password`,
  route: (secret: string) => `route-${secret}.password`,
  rateLimitStore: 'ratelimit-store.password',
};

export interface RelayConfigResult {
  doc: Record<string, unknown>;
  problems: Problem[];
  /** Data of the operator-owned Secret (file name → content). */
  secretData: Record<string, string>;
}

const LIMIT_DEFAULTS = CONFIG_SCHEMA.properties.limits.properties;

/**
 * What the relay refuses in spec.limits beyond its schema (relay/src/contract/resolve.ts, resolveRelayConfig), with the
 * relay's defaults for what the spec leaves out. The CRD's CEL rule says the first one at admission.
 */
export function limitsProblems(limits: SmtpRelaySpec['limits']): Problem[] {
  const l = limits ?? {};
  const out: Problem[] = [];
  const maxConnections = l.maxConnections ?? LIMIT_DEFAULTS.maxConnections.default;
  if (l.reservedForTrusted !== undefined && l.reservedForTrusted >= maxConnections)
    out.push({
      reason: 'InvalidSpec',
      message: `limits.reservedForTrusted (${l.reservedForTrusted}) must be below limits.maxConnections (${maxConnections})`,
    });
  const auth = LIMIT_DEFAULTS.auth.properties;
  const delay = l.auth?.failureDelay ?? auth.failureDelay.default;
  const maxDelay = l.auth?.maxFailureDelay ?? auth.maxFailureDelay.default;
  try {
    if (parseDuration(maxDelay) < parseDuration(delay))
      out.push({
        reason: 'InvalidSpec',
        message: `limits.auth.maxFailureDelay (${maxDelay}) must not be shorter than limits.auth.failureDelay (${delay})`,
      });
  } catch {
    // not a duration: the CRD's pattern refuses it, and the relay schema check reports it
  }
  return out;
}

/**
 * Renders the relay config (CONFIG_SCHEMA of relay/src/contract/config-schema.ts) for the whole fleet. Every pod reads
 * the same file; pool addresses name the pod they belong to.
 */
export function buildRelayConfig(input: BuildInput): RelayConfigResult {
  const { relay } = input;
  const spec = relay.spec;
  const name = relay.metadata.name!;
  const ns = relay.metadata.namespace!;
  const problems: Problem[] = limitsProblems(spec.limits);
  const secretData: Record<string, string> = {
    [secretKeys.admin]: input.adminToken,
    [secretKeys.peer]: input.peerPassword,
  };
  const listeners = (spec.listeners ?? DEFAULT_LISTENERS).map((l) => ({
    name: l.name,
    address: '${POD_IP}',
    port: containerPortOf(l),
    tls: l.tls ?? 'none',
    auth: l.auth ?? 'optional',
    // the listener's client limits, over spec.limits (the relay merges them; a reload applies them)
    ...(l.limits && Object.keys(l.limits).length ? { limits: l.limits } : {}),
  }));
  const route = (
    r: { host: string; port?: number; tls?: string; credentialsSecret?: string },
    where: string,
  ): Record<string, unknown> => {
    const out: Record<string, unknown> = { host: r.host, port: r.port ?? 25, tls: r.tls ?? 'opportunistic' };
    if (r.credentialsSecret) {
      const c = input.credentials.get(r.credentialsSecret);
      if (!c) {
        problems.push({
          reason: 'SecretMissing',
          message: `${where}: Secret ${r.credentialsSecret} (keys username, password) not found or incomplete`,
        });
      } else {
        secretData[secretKeys.route(r.credentialsSecret)] = c.password;
        out.credentials = { username: c.username, passwordFile: secretKeys.route(r.credentialsSecret) };
      }
    }
    return out;
  };
  const usernames = new Set<string>();
  const usedPools = new Set<string>();
  const tenants = (spec.tenants ?? []).map((t) => {
    const out: Record<string, unknown> = { name: t.name };
    if (t.credentialsSecret) {
      const c = input.credentials.get(t.credentialsSecret);
      if (!c) {
        problems.push({
          reason: 'SecretMissing',
          message: `tenant ${t.name}: Secret ${t.credentialsSecret} (keys username, password) not found or incomplete; the tenant cannot authenticate`,
        });
      } else if (usernames.has(c.username) || c.username === PEER_USERNAME) {
        problems.push({
          reason: 'DuplicateAccount',
          message: `tenant ${t.name}: username ${c.username} from Secret ${t.credentialsSecret} is used by another tenant`,
        });
      } else {
        usernames.add(c.username);
        secretData[secretKeys.tenant(t.name)] = c.password;
        out.accounts = [{ username: c.username, passwordFile: secretKeys.tenant(t.name) }];
      }
    }
    if (t.trustedNetworks?.length) out.trustedNetworks = t.trustedNetworks;
    if (t.senderDomains?.length) out.senderDomains = t.senderDomains;
    const rates = rateList(t.rateLimits);
    if (rates.length) out.rateLimits = rates;
    if (t.rateLimits?.burst) out.burst = t.rateLimits.burst;
    if (t.quota && (t.quota.messages || t.quota.bytes)) out.quota = t.quota;
    if (t.bounceRate && Object.keys(t.bounceRate).length) out.bounceRate = t.bounceRate;
    if (t.complaintRate && Object.keys(t.complaintRate).length) out.complaintRate = t.complaintRate; // ADR 018
    if (t.maxAge) out.maxAge = t.maxAge;
    const dkim = renderDkim(t, input.dkimKeys ?? new Map(), secretData, problems);
    if (dkim) out.dkim = dkim;
    const webhooks = renderWebhooks(t, input.webhookKeys ?? new Map(), secretData, problems);
    if (webhooks) out.webhooks = webhooks; // delivery events (docs/events.md)
    if (t.bulk) out.bulk = true; // bulk-sender lint (ADR 014)
    if (t.lint?.policy) out.lint = { policy: t.lint.policy };
    renderTenantFeedback(spec, t, out); // the feedback loop (ADR 016)
    if (t.ipPool) {
      const pool = input.pools.get(t.ipPool);
      const mine = input.allocations.filter((a) => a.pool === t.ipPool);
      if (!pool) {
        problems.push({ reason: 'IpPoolMissing', message: `tenant ${t.name}: IpPool ${t.ipPool} not found` });
      } else if (mine.length === 0 && pool.spec.mode !== 'HostNetwork') {
        // No address for any pod of this relay yet: the controller holds new pods back until there is
        // one (the IpPool reports an exhausted pool). Rendered without the pool meanwhile.
      } else {
        out.ipPool = t.ipPool;
        usedPools.add(t.ipPool);
      }
    }
    return out;
  });
  const ipPools = [...usedPools].sort().map((p) => {
    const pool = input.pools.get(p)!;
    const bind = (pool.spec.mode ?? 'PodNetwork') !== 'CiliumEgressGateway';
    if (pool.spec.mode === 'HostNetwork') {
      // the address depends on the node a pod lands on: each relay keeps its node's (NODE_NAME)
      const addresses = pool.spec.addresses
        .filter((a) => a.node)
        .map((a) => ({
          ip: a.ip,
          ehlo: a.ehlo,
          ...(a.perHour ? { perHour: a.perHour } : {}),
          ...(a.perDay ? { perDay: a.perDay } : {}),
          node: a.node,
        }));
      return { name: p, addresses, ...(pool.spec.warmup ? { warmup: pool.spec.warmup } : {}) };
    }
    const addresses = input.allocations
      .filter((a) => a.pool === p)
      .sort((a, b) => a.pod.localeCompare(b.pod, 'en', { numeric: true }))
      .map((a) => {
        const spec = pool.spec.addresses.find((x) => x.ip === a.ip)!;
        return {
          ip: a.ip,
          ehlo: spec.ehlo,
          ...(spec.perHour ? { perHour: spec.perHour } : {}),
          ...(spec.perDay ? { perDay: spec.perDay } : {}),
          pod: a.pod,
          ...(bind ? {} : { bind: false }),
        };
      });
    return { name: p, addresses, ...(pool.spec.warmup ? { warmup: pool.spec.warmup } : {}) };
  });
  const q = spec.queue ?? {};
  const queue: Record<string, unknown> = {};
  if (q.maxMessages) queue.maxMessages = q.maxMessages;
  if (q.retry && Object.keys(q.retry).length) queue.retry = q.retry;
  queue.maxAge = q.maxAge ?? '5d';
  if (q.delayWarningAfter) queue.delayWarningAfter = q.delayWarningAfter;
  const routing: Record<string, unknown> = {};
  const def = spec.routing?.default;
  if (def?.type === 'smarthost' && def.smarthost) {
    routing.default = { type: 'smarthost', smarthost: route(def.smarthost, 'routing.default.smarthost') };
  } else {
    routing.default = { type: 'mx' };
  }
  if (spec.routing?.domains?.length)
    routing.domains = spec.routing.domains.map((d, i) => ({
      domain: d.domain,
      ...route(d, `routing.domains[${i}]`),
    }));
  if (spec.routing?.backups?.length)
    routing.backups = spec.routing.backups.map((b, i) => route(b, `routing.backups[${i}]`));
  const outboundTls = renderOutboundTls(spec.outboundTls, input.outboundCa, secretData, problems);
  const feedback = renderFeedback(spec, input.feedbackKey ?? '', secretData, { name, namespace: ns });
  if (feedback && !input.feedbackKey)
    problems.push({ reason: 'InvalidSpec', message: 'feedback: no return-path token key was generated' });
  const grace = spec.terminationGracePeriodSeconds ?? 120;
  const doc: Record<string, unknown> = {
    version: 1,
    hostname: spec.hostname ?? `${name}.${ns}.svc`,
    // relative to this file's folder (/etc/cartero/config), so the tree also works under a test kubelet
    paths: {
      root: '../../..',
      spool: `${MOUNTS.spool.slice(1)}/spool`,
      secrets: MOUNTS.secrets.slice(1),
      tls: MOUNTS.tls.slice(1),
    },
    listeners,
    ...(spec.tls ? { tls: { certFile: 'tls.crt', keyFile: 'tls.key' } } : {}),
    ...(spec.trustedNetworks?.length ? { trustedNetworks: spec.trustedNetworks } : {}),
    ...(spec.limits && Object.keys(spec.limits).length ? { limits: spec.limits } : {}),
    queue,
    ...(spec.delivery && Object.keys(spec.delivery).length ? { delivery: spec.delivery } : {}),
    routing,
    ...(spec.dns && Object.keys(spec.dns).length ? { dns: spec.dns } : {}),
    ...(outboundTls ? { outboundTls } : {}),
    ...(feedback ? { feedback } : {}),
    tenants,
    ipPools,
    fleet: { rateLimitShare: rateShare(input.replicas), ...rateLimitStore(input, secretData, problems) },
    peer: { username: PEER_USERNAME, passwordFile: secretKeys.peer },
    admin: { address: '${POD_IP}', port: ADMIN_PORT, tokenFile: secretKeys.admin },
    shutdown: { gracePeriod: `${Math.max(grace - 10, 5)}s` },
    logging: { level: spec.logLevel ?? 'info' },
  };
  // The revision names what was rendered, secrets included, so the status can tell which relays run it.
  (doc.fleet as Record<string, unknown>).revision = sha256(
    JSON.stringify(doc) + JSON.stringify(Object.entries(secretData).sort()),
  ).slice(0, 16);
  return { doc, problems, secretData };
}

/** The relay's fleet.rateLimitStore for spec.rateLimitStore (docs/adr/009-fleet-rate-limits.md). */
function rateLimitStore(
  input: BuildInput,
  secretData: Record<string, string>,
  problems: Problem[],
): { rateLimitStore?: Record<string, unknown> } {
  const st = input.relay.spec.rateLimitStore;
  if (!st) return {};
  const { namespace, name } = input.relay.metadata;
  let keyPrefix = st.keyPrefix ?? `${namespace}/${name}:`;
  if (keyPrefix.length > 64) keyPrefix = `${sha256(`${namespace}/${name}`).slice(0, 16)}:`;
  const out: Record<string, unknown> = { type: 'redis', address: st.address, keyPrefix };
  if (st.timeout) out.timeout = st.timeout;
  if (st.credentialsSecret) {
    const c = input.credentials.get(st.credentialsSecret);
    if (!c) {
      problems.push({
        reason: 'SecretMissing',
        message: `rateLimitStore: Secret ${st.credentialsSecret} (keys username, password) not found or incomplete; each pod enforces its share`,
      });
      return {};
    } else {
      secretData[secretKeys.rateLimitStore] = c.password;
      if (c.username !== 'default') out.username = c.username;
      out.passwordFile = secretKeys.rateLimitStore;
    }
  }
  return { rateLimitStore: out };
}

/** Each replica's share of every tenant limit; at least a tiny positive share so the schema holds. */
export function rateShare(replicas: number): number {
  return replicas <= 1 ? 1 : Math.floor((1 / replicas) * 1e6) / 1e6;
}
