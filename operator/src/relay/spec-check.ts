/** Decide: rules the CRD schema cannot express across objects, and CEL rules the API server may not evaluate. */
import type { SmtpRelay } from '../api/types.js';
import { DEFAULT_LISTENERS } from '../constants.js';
import type { Problem } from '../conditions.js';

/** The problems of `relay`'s spec; `poolExists` says whether an IpPool of its namespace exists. */
export function checkSpec(relay: SmtpRelay, poolExists: (name: string) => boolean): Problem[] {
  const out: Problem[] = [];
  const seen = new Set<string>();
  for (const t of relay.spec.tenants ?? []) {
    if (seen.has(t.name)) out.push({ reason: 'InvalidSpec', message: `tenant ${t.name} is defined twice` });
    seen.add(t.name);
    if (t.ipPool && !poolExists(t.ipPool))
      out.push({ reason: 'IpPoolMissing', message: `tenant ${t.name}: IpPool ${t.ipPool} not found` });
  }
  const d = relay.spec.routing?.default;
  if (d?.type === 'smarthost' && !d.smarthost)
    out.push({
      reason: 'InvalidSpec',
      message: 'routing.default.type is smarthost but routing.default.smarthost is missing',
    });
  const ls = relay.spec.listeners ?? DEFAULT_LISTENERS;
  if (ls.some((l) => (l.tls ?? 'none') !== 'none') && !relay.spec.tls)
    out.push({ reason: 'InvalidSpec', message: 'a listener uses TLS but spec.tls.secretName is not set' });
  const tenants = new Set((relay.spec.tenants ?? []).map((t) => t.name));
  for (const q of relay.spec.queue?.suspend ?? []) {
    if (!q.tenant && !q.domain)
      out.push({ reason: 'InvalidSpec', message: 'a queue.suspend item names neither tenant nor domain' });
    else if (q.tenant && !tenants.has(q.tenant))
      out.push({
        reason: 'InvalidSpec',
        message: `queue.suspend names tenant ${q.tenant}, which is not in spec.tenants; it is not applied`,
      });
  }
  return [...new Map(out.map((p) => [p.message, p])).values()];
}
