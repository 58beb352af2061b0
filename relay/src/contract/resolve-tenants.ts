/**
 * Config resolution (resolve.ts) of who sends: the accounts (top-level and per tenant) and the tenants,
 * with the rules across them (an account defined once, a tenant named once, the peer account not a
 * tenant's, every account's tenant defined, pools named by tenants defined).
 */
import { ConfigError } from '../errors.js';
import type { RawTenant, ValidatedConfig } from './config-raw.js';
import { DEFAULT_TENANT, type RelayConfig, type TenantConfig } from './config-types.js';
import { parseDuration } from './duration.js';
import { parseCidrs, type SecretReader } from './resolve-fields.js';
import { resolveDkim } from './resolve-dkim.js';

export interface Senders {
  accounts: RelayConfig['accounts'];
  tenants: RelayConfig['tenants'];
  /** The tenants' own networks, most specific first (resolve.ts adds the global trustedNetworks after them). */
  tenantNetworks: RelayConfig['tenantNetworks'];
}

/** The tenant "default" when the config does not define it: unlimited, with the schema's defaults. */
const implicitDefaultTenant = (): TenantConfig => ({
  name: DEFAULT_TENANT,
  senderDomains: [],
  rateLimits: [],
  quota: {},
  bounceRate: { warn: 0.05, pause: 0.1, windowMs: 3_600_000, minVolume: 100, cooldownMs: 3_600_000 },
  complaintRate: { warn: 0.001, pause: 0.003, windowMs: 86_400_000, minVolume: 1000, cooldownMs: 86_400_000 },
  suppression: { enabled: true, ttlMs: 30 * 86_400_000 },
  bulk: false,
  lint: { policy: 'report' },
});

export function resolveSenders(c: ValidatedConfig, readSecret: SecretReader): Senders {
  const accounts: RelayConfig['accounts'] = new Map();
  c.accounts.forEach((a, i) => {
    if (accounts.has(a.username))
      throw new ConfigError(`/accounts/${i}/username`, `duplicate account ${a.username}`);
    accounts.set(a.username, {
      password: readSecret('secrets', a.passwordFile, `/accounts/${i}/passwordFile`),
      tenant: a.tenant,
    });
  });
  const tenants: RelayConfig['tenants'] = new Map();
  const tenantNetworks: RelayConfig['tenantNetworks'] = [];
  const poolNames = new Set<string>(c.ipPools.map((p) => p.name));
  c.tenants.forEach((t, i) => {
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
    if (t.complaintRate.pause < t.complaintRate.warn)
      throw new ConfigError(`${f}/complaintRate/pause`, 'must not be below complaintRate.warn');
    t.rateLimits.forEach((r, k) => {
      if (t.rateLimits.findIndex((x) => x.split('/')[1] === r.split('/')[1]) !== k)
        throw new ConfigError(`${f}/rateLimits/${k}`, `a second limit per ${r.split('/')[1]}`);
    });
    t.accounts.forEach((a, k) => {
      if (accounts.has(a.username))
        throw new ConfigError(`${f}/accounts/${k}/username`, `duplicate account ${a.username}`);
      accounts.set(a.username, {
        password: readSecret('secrets', a.passwordFile, `${f}/accounts/${k}/passwordFile`),
        tenant: t.name,
      });
    });
    parseCidrs(t.trustedNetworks, `${f}/trustedNetworks`).forEach((net) =>
      tenantNetworks.push({ net, tenant: t.name }),
    );
    const tc = tenantConfig(t, c.queue.retry);
    if (t.dkim) tc.dkim = resolveDkim(t.dkim, readSecret, `${f}/dkim`);
    if (t.webhooks.length) {
      const urls = new Set<string>();
      tc.webhooks = t.webhooks.map((w, k) => {
        if (urls.has(w.url)) throw new ConfigError(`${f}/webhooks/${k}/url`, 'the same URL twice');
        urls.add(w.url);
        return {
          url: w.url,
          secret: readSecret('secrets', w.secretFile, `${f}/webhooks/${k}/secretFile`),
          events: w.events,
          batchSize: w.batchSize,
          timeoutMs: parseDuration(w.timeout),
          retryForMs: parseDuration(w.retryFor),
        };
      });
    }
    tenants.set(t.name, tc);
  });
  if (c.peer && accounts.has(c.peer.username))
    throw new ConfigError('/peer/username', `${c.peer.username} is also a tenant account`);
  for (const [user, a] of accounts) {
    if (tenants.size > 0 && a.tenant !== DEFAULT_TENANT && !tenants.has(a.tenant)) {
      const i = c.accounts.findIndex((x) => x.username === user);
      throw new ConfigError(
        `/accounts/${i}/tenant`,
        `no tenant named ${JSON.stringify(a.tenant)} in /tenants`,
      );
    }
  }
  if (!tenants.has(DEFAULT_TENANT)) tenants.set(DEFAULT_TENANT, implicitDefaultTenant());
  // most specific network first, so a tenant's /32 wins over a /8
  tenantNetworks.sort((a, b) => b.net[1] - a.net[1]);
  return { accounts, tenants, tenantNetworks };
}

/** One tenant as the relay runs it; a retry setting it leaves out comes from queue.retry. */
function tenantConfig(t: RawTenant, queueRetry: ValidatedConfig['queue']['retry']): TenantConfig {
  return {
    name: t.name,
    senderDomains: t.senderDomains.map((d) => d.toLowerCase()),
    rateLimits: t.rateLimits,
    ...(t.burst !== undefined ? { burst: t.burst } : {}),
    ...(t.ipPool !== undefined ? { ipPool: t.ipPool } : {}),
    ...(t.retry
      ? {
          retry: {
            initialMs: parseDuration(t.retry.initial ?? queueRetry.initial),
            factor: t.retry.factor ?? queueRetry.factor,
            maxMs: parseDuration(t.retry.max ?? queueRetry.max),
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
    complaintRate: {
      warn: t.complaintRate.warn,
      pause: t.complaintRate.pause,
      windowMs: parseDuration(t.complaintRate.window),
      minVolume: t.complaintRate.minVolume,
      cooldownMs: parseDuration(t.complaintRate.cooldown),
    },
    suppression: { enabled: t.suppression.enabled, ttlMs: parseDuration(t.suppression.ttl) },
    bulk: t.bulk,
    lint: { policy: t.lint.policy },
    ...(t.returnPath
      ? { returnPath: { domain: t.returnPath.domain.toLowerCase(), prefix: t.returnPath.prefix } }
      : {}),
    ...(t.feedbackAddress ? { feedbackAddress: t.feedbackAddress.toLowerCase() } : {}),
  };
}
