/**
 * Admin endpoints for tenants, their rate-limit counts and their suppression lists (registered once the
 * tenancy runtime is open; the operator calls the POSTs with source "fleet"). The request bodies are read
 * by the pure parse* functions below, which throw an HttpError (400) naming what is wrong.
 *
 *   GET    /tenants, /tenants/<name>            -> guard state, queue usage and rate-limit counts
 *   POST   /tenants/<name>/pause   {reason?, until?, source?}  (source "guard": the operator's fleet judgement)
 *   POST   /tenants/<name>/resume  {source?}
 *   GET    /ratelimits                          -> this replica's (or the fleet store's) counts per tenant
 *   POST   /ratelimits/<name>      {unit: "h"|"d", used}   (a departing replica's counts, carried over)
 *   GET    /suppressions?tenant=&after=&limit=  -> one page of the list
 *   GET    /suppressions/changes?since=&limit=  -> the change feed
 *   POST   /suppressions           {tenant, address, ttl?, reason?, source?}  (source "complaint" also
 *                                   counts against the tenant's complaint rate, ADR 018)
 *   DELETE /suppressions/<tenant>/<address>?source=
 */
import type { Logger } from 'pino';
import type { RelayConfig } from './config.js';
import type {
  RateLimitsResponse,
  SuppressionChangesResponse,
  TenantsResponse,
} from './contract/admin-api.js';
import { parseDuration } from './contract/duration.js';
import { HttpError, type AdminServer } from './admin.js';
import type { DeliveryEngine } from './delivery/engine.js';
import type { TenantRuntime } from './tenant-runtime.js';

type Body = Record<string, unknown>;
type Source = 'fleet' | 'admin';

/** Who asks: "fleet" (the operator) or, for anything else, "admin". */
export const sourceOf = (body: Body): Source => (body.source === 'fleet' ? 'fleet' : 'admin');

/** A pause request: the reason (one of at most 300 characters), until when (epoch ms), and who asks. */
export function parsePause(body: Body): { reason: string; until?: number; by: Source | 'guard' } {
  const reason =
    typeof body.reason === 'string' && body.reason ? body.reason.slice(0, 300) : 'paused by an administrator';
  let until: number | undefined;
  if (body.until !== undefined) {
    until = typeof body.until === 'number' ? body.until : Date.parse(String(body.until));
    if (!Number.isFinite(until))
      throw new HttpError(400, 'until must be a time (ISO 8601 or epoch milliseconds)');
  }
  // "guard": the operator's fleet-wide complaint-rate judgement (ADR 018), shared like the relay's own
  return { reason, until, by: body.source === 'guard' ? 'guard' : sourceOf(body) };
}

/** Counts carried from a departing replica: which window (hour or day) and how many were used. */
export function parseRateCarry(body: Body): { unit: 'h' | 'd'; used: number } {
  if (
    (body.unit !== 'h' && body.unit !== 'd') ||
    !Number.isSafeInteger(body.used) ||
    (body.used as number) < 0
  )
    throw new HttpError(400, 'body must be {"unit": "h" | "d", "used": <non-negative integer>}');
  return { unit: body.unit, used: body.used as number };
}

/** One page of the suppression list: `limit` defaults to 100 and is kept within 1..1000. */
export function parseSuppressionPage(q: URLSearchParams): { tenant?: string; after?: string; limit: number } {
  return {
    tenant: q.get('tenant') ?? undefined,
    after: q.get('after') ?? undefined,
    limit: Math.min(Math.max(Number(q.get('limit') ?? 100) || 100, 1), 1000),
  };
}

/** A read of the change feed: after `since` (a non-negative integer), at most `limit` (default 1000, max 10 000). */
export function parseChangesQuery(q: URLSearchParams): { since: number; limit: number } {
  const since = Number(q.get('since') ?? 0);
  if (!Number.isInteger(since) || since < 0) throw new HttpError(400, 'since must be a non-negative integer');
  return { since, limit: Math.min(Number(q.get('limit') ?? 1000) || 1000, 10_000) };
}

/**
 * A suppression to add, for a tenant already checked: the address (trimmed), its TTL (`ttl` as a duration,
 * else the tenant's `defaultTtlMs`), the reason and who asks.
 */
export function parseSuppressionAdd(
  body: Body,
  defaultTtlMs: number,
): { address: string; ttlMs: number; reason: string; source: Source | 'complaint' } {
  const address = String(body.address ?? '').trim();
  if (!/^[^@\s]+@[^@\s]+$/.test(address)) throw new HttpError(400, 'address must be an email address');
  let ttlMs = defaultTtlMs;
  if (body.ttl !== undefined) {
    try {
      ttlMs = parseDuration(String(body.ttl));
    } catch (e) {
      throw new HttpError(400, `ttl: ${(e as Error).message}`);
    }
    if (ttlMs <= 0) throw new HttpError(400, 'ttl must be longer than 0');
  }
  const source = body.source === 'complaint' ? 'complaint' : sourceOf(body);
  return { address, ttlMs, reason: String(body.reason ?? `added by ${source}`), source };
}

export function registerTenantOps(
  a: AdminServer,
  o: {
    /** The config in force (a reload replaces it). */
    cfg: () => RelayConfig;
    tenancy: () => TenantRuntime;
    engine: DeliveryEngine;
    log: Logger;
  },
): void {
  const t = o.tenancy;
  const known = (name: string) => {
    if (!o.cfg().tenants.has(name)) throw new HttpError(404, `no tenant named ${name}`);
    return name;
  };
  const tenantView = async (name: string) => ({
    name,
    ...t().guard.state(name),
    queue: o.engine.tenantUsage(name),
    rateLimits: (await t().rateUsage(name)).usage,
  });
  a.route('GET', '/tenants', async () => [
    200,
    {
      tenants: await Promise.all([...o.cfg().tenants.keys()].map(tenantView)),
    } satisfies TenantsResponse,
  ]);
  a.route('GET', '/tenants/([a-z0-9-]+)', async (r) => [200, await tenantView(known(r.params[0]))]);
  a.route('POST', '/tenants/([a-z0-9-]+)/pause', async (r) => {
    const name = known(r.params[0]);
    const { reason, until, by } = parsePause(await r.body());
    t().guard.pause(name, reason, until, by);
    o.log.warn({ event: 'tenant.paused', tenant: name, reason, until, by }, `tenant ${name} paused`);
    await t().save();
    return [200, await tenantView(name)];
  });
  a.route('POST', '/tenants/([a-z0-9-]+)/resume', async (r) => {
    const name = known(r.params[0]);
    const by = sourceOf(await r.body());
    t().guard.resume(name, by);
    o.log.warn({ event: 'tenant.active', tenant: name, by }, `tenant ${name} resumed`);
    await t().save();
    return [200, await tenantView(name)];
  });
  // Without a store: this replica's counts (limit = its share), which the operator carries to the
  // survivors when a replica leaves. With one: the fleet-wide counts (scope "fleet"), which stay in the
  // store when a replica leaves, so a POST changes nothing shared (docs/adr/009-fleet-rate-limits.md).
  a.route('GET', '/ratelimits', async () => {
    const names = [...o.cfg().tenants.keys()];
    const views = await Promise.all(names.map((n) => t().rateUsage(n)));
    const store = t().storeState();
    return [
      200,
      {
        share: o.cfg().fleet.rateLimitShare,
        ...(store ? { store } : {}),
        scope: views.some((v) => v.scope === 'fleet') ? 'fleet' : 'replica',
        tenants: Object.fromEntries(names.map((n, i) => [n, views[i].usage])),
      } satisfies RateLimitsResponse,
    ];
  });
  a.route('POST', '/ratelimits/([a-z0-9-]+)', async (r) => {
    const name = known(r.params[0]);
    const { unit, used } = parseRateCarry(await r.body());
    const view = await t().rateUsage(name);
    if (view.scope === 'fleet') return [200, { tenant: name, scope: 'fleet', rateLimits: view.usage }];
    t().limiter(name)?.addUsed(unit, used);
    await t().save();
    return [200, { tenant: name, scope: 'replica', rateLimits: t().limiter(name)?.usage() ?? [] }];
  });
  a.route('GET', '/suppressions', (r) => [200, t().suppressions.list(parseSuppressionPage(r.query))]);
  a.route('GET', '/suppressions/changes', (r) => {
    const { since, limit } = parseChangesQuery(r.query);
    return [200, t().suppressions.changesSince(since, limit) satisfies SuppressionChangesResponse];
  });
  a.route('POST', '/suppressions', async (r) => {
    const body = await r.body();
    const name = known(String(body.tenant ?? ''));
    const add = parseSuppressionAdd(body, o.cfg().tenants.get(name)!.suppression.ttlMs);
    const change = await t().suppressions.add({ tenant: name, ...add });
    if (add.source === 'complaint') t().countComplaint(name, 'admin'); // ADR 018: counts as a complaint
    return [201, change];
  });
  a.route('DELETE', '/suppressions/([a-z0-9-]+)/([^/]+)', async (r) => {
    const change = await t().suppressions.remove(
      known(r.params[0]),
      r.params[1],
      r.query.get('source') ?? 'admin',
    );
    if (!change) throw new HttpError(404, `${r.params[1]} is not suppressed for tenant ${r.params[0]}`);
    return [200, change];
  });
}
