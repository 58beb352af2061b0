/**
 * Admin endpoints for bulk queue operations: suspend, resume and purge by tenant, destination domain or
 * both (the operator calls them with source "fleet").
 *
 *   GET  /queue/suspensions  -> {"suspensions": [{tenant?, domain?, reason, source, since}]}
 *   POST /queue/suspend  {tenant?, domain?, reason?, source?}  -> {"suspension": {...}, "held": N}
 *   POST /queue/resume   {tenant?, domain?, source?}           -> {"resumed": bool, "released": N}
 *   POST /queue/purge    {tenant?, domain?, dsn: bool}         -> {"purged": N, "dsn": M, "busy": K}
 */
import type { Logger } from 'pino';
import type {
  PurgeResult,
  ResumeResponse,
  SuspendResponse,
  SuspensionsResponse,
} from './contract/admin-api.js';
import { HttpError, type AdminServer } from './admin.js';
import type { DeliveryEngine } from './delivery/engine.js';
import type { Suspensions, SuspensionSource } from './delivery/suspensions.js';

const DOMAIN_RE = /^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$/;

export function registerQueueOps(
  admin: AdminServer,
  o: {
    engine: DeliveryEngine;
    suspensions: Suspensions;
    tenantExists: (name: string) => boolean;
    log: Logger;
    now: () => number;
  },
): void {
  const scope = (body: Record<string, unknown>, required: boolean) => {
    const tenant = body.tenant === undefined || body.tenant === '' ? undefined : body.tenant;
    const domain = body.domain === undefined || body.domain === '' ? undefined : body.domain;
    if (tenant !== undefined && typeof tenant !== 'string')
      throw new HttpError(400, 'tenant must be a string');
    if (domain !== undefined && (typeof domain !== 'string' || !DOMAIN_RE.test(domain.toLowerCase())))
      throw new HttpError(400, 'domain must be a domain name');
    if (required && tenant === undefined && domain === undefined)
      throw new HttpError(400, 'give a tenant, a domain, or both');
    if (tenant !== undefined && !o.tenantExists(tenant))
      throw new HttpError(404, `no tenant named ${tenant}`);
    return { tenant, domain: domain?.toLowerCase() };
  };
  const source = (body: Record<string, unknown>): SuspensionSource | undefined => {
    if (body.source === undefined) return undefined;
    if (body.source !== 'admin' && body.source !== 'fleet')
      throw new HttpError(400, 'source must be "admin" or "fleet"');
    return body.source;
  };

  admin.route('GET', '/queue/suspensions', () => [
    200,
    { suspensions: [...o.suspensions.all] } satisfies SuspensionsResponse,
  ]);

  admin.route('POST', '/queue/suspend', async (r) => {
    const body = await r.body();
    const { tenant, domain } = scope(body, true);
    const src = source(body) ?? 'admin';
    const reason =
      typeof body.reason === 'string' && body.reason
        ? body.reason.slice(0, 300)
        : `suspended by ${src === 'fleet' ? 'the fleet' : 'an administrator'}`;
    const suspension = await o.suspensions.add({ tenant, domain, reason, source: src }, o.now());
    const held = o.engine.countMatching(tenant, domain);
    o.log.warn({ event: 'queue.suspended', tenant, domain, reason, by: src, held }, 'queue suspended');
    return [200, { suspension, held } satisfies SuspendResponse];
  });

  admin.route('POST', '/queue/resume', async (r) => {
    const body = await r.body();
    const { tenant, domain } = scope(body, true);
    const src = source(body);
    const resumed = await o.suspensions.remove(tenant, domain, src);
    const released = resumed ? o.engine.release(tenant, domain) : 0;
    o.log.warn(
      { event: 'queue.resumed', tenant, domain, by: src ?? 'any', resumed, released },
      'queue resumed',
    );
    return [200, { resumed, released } satisfies ResumeResponse];
  });

  admin.route('POST', '/queue/purge', async (r) => {
    const body = await r.body();
    const { tenant, domain } = scope(body, true);
    if (typeof body.dsn !== 'boolean') throw new HttpError(400, 'dsn must be true or false');
    // a purge must see the whole queue: mail the start-up scan has not reached yet would escape it
    if (o.engine.recovering)
      throw new HttpError(
        409,
        'the relay is still indexing its spool (recovering); try again when it is done',
      );
    const res = await o.engine.purge(tenant, domain, body.dsn);
    o.log.warn({ event: 'queue.purge', tenant, domain, withDsn: body.dsn, ...res }, 'queue purged');
    return [200, res satisfies PurgeResult];
  });
}
