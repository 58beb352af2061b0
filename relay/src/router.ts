/**
 * Route selection, a pure function of the routing config: per-domain routes first (exact, then the most
 * specific `*.suffix` wildcard, which matches subdomains only, like Postfix's `.example.com`), then the
 * default route (MX lookup or smarthost). Backups are appended by the delivery engine.
 */
import { createHash } from 'node:crypto';
import type { HostRoute, RelayConfig } from './config.js';
import type { RouteKind } from './metrics.js';

export type Route =
  | { kind: 'mx'; key: string; domain: string }
  | { kind: 'smarthost' | 'domain'; key: string; domain: string; host: HostRoute };

/** Sessions are reused only between routes that would open the same session: host, port, TLS mode and login. */
const keys = new WeakMap<HostRoute, string>();
export function hostKey(h: HostRoute): string {
  let k = keys.get(h);
  if (k === undefined) keys.set(h, (k = computeKey(h)));
  return k;
}
function computeKey(h: HostRoute): string {
  const login = h.credentials
    ? createHash('sha256')
        .update(`${h.credentials.username}\0${h.credentials.password}`)
        .digest('hex')
        .slice(0, 12)
    : '';
  return `${h.host.toLowerCase()}:${h.port}:${h.tls}:${login}`;
}

export function selectRoute(routing: RelayConfig['routing'], domain: string): Route {
  const d = domain.toLowerCase();
  let best: (HostRoute & { domain: string }) | undefined;
  for (const r of routing.domains) {
    if (r.domain === d) return { kind: 'domain', key: `route:${hostKey(r)}`, domain: d, host: r };
    if (
      r.domain.startsWith('*.') &&
      d.endsWith(r.domain.slice(1)) &&
      (!best || r.domain.length > best.domain.length)
    )
      best = r;
  }
  if (best) return { kind: 'domain', key: `route:${hostKey(best)}`, domain: d, host: best };
  if (routing.default.type === 'smarthost') {
    return {
      kind: 'smarthost',
      key: `route:${hostKey(routing.default.smarthost)}`,
      domain: d,
      host: routing.default.smarthost,
    };
  }
  return { kind: 'mx', key: `mx:${d}`, domain: d };
}

export function routeLabel(kind: Route['kind'] | 'backup'): RouteKind {
  return kind;
}
