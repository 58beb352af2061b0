/**
 * Admin endpoint for complaints entered by hand (ADR 018), next to POST /suppressions with
 * `source: "complaint"` (tenant-admin.ts), which also counts:
 *
 *   POST /tenants/<name>/complaints  {recipient, reason?}
 *     -> 201 with the tenant's guard state: the complaint counted against its complaint rate and the
 *        recipient suppressed (source "complaint") when its suppression list is enabled.
 */
import type { Logger } from 'pino';
import { HttpError, type AdminServer } from './admin.js';
import type { RelayConfig } from './config.js';
import type { TenantRuntime } from './tenant-runtime.js';

/** A complaint entered by hand: the recipient (an address, at most 320 characters) and the reason. */
export function parseComplaint(body: Record<string, unknown>): { recipient: string; reason: string } {
  const recipient = typeof body.recipient === 'string' ? body.recipient.trim() : '';
  if (recipient.length > 320 || !/^[^@\s]+@[^@\s]+$/.test(recipient))
    throw new HttpError(400, 'recipient must be an email address (at most 320 characters)');
  const reason =
    typeof body.reason === 'string' && body.reason ? body.reason.slice(0, 300) : 'complaint entered by hand';
  return { recipient, reason };
}

export function registerComplaintOps(
  a: AdminServer,
  o: { cfg: () => RelayConfig; tenancy: () => TenantRuntime; log: Logger },
): void {
  a.route('POST', '/tenants/([a-z0-9-]+)/complaints', async (r) => {
    const name = r.params[0];
    if (!o.cfg().tenants.has(name)) throw new HttpError(404, `no tenant named ${name}`);
    const { recipient, reason } = parseComplaint(await r.body());
    await o.tenancy().addComplaint(name, recipient, 'admin', reason);
    return [201, { name, ...o.tenancy().guard.state(name) }];
  });
}
