/**
 * Route selection, a pure function of the routing config: per-domain routes first (exact, then the most
 * specific `*.suffix` wildcard, which matches subdomains only, like Postfix's `.example.com`), then the
 * default route (MX lookup or smarthost). Backups are appended by the delivery engine.
 */
import type { HostRoute, RelayConfig } from './config.js';
import type { RouteKind } from './metrics.js';

export type Route =
  | { kind: 'mx'; key: string; domain: string }
  | { kind: 'smarthost' | 'domain'; key: string; domain: string; host: HostRoute };

export function hostKey(h: HostRoute): string {
  return `${h.host.toLowerCase()}:${h.port}`;
}

export function selectRoute(routing: RelayConfig['routing'], domain: string): Route {
  const d = domain.toLowerCase();
  let best: (HostRoute & { domain: string }) | undefined;
  for (const r of routing.domains) {
    if (r.domain === d) return { kind: 'domain', key: `route:${hostKey(r)}`, domain: d, host: r };
    if (r.domain.startsWith('*.') && d.endsWith(r.domain.slice(1)) && (!best || r.domain.length > best.domain.length)) best = r;
  }
  if (best) return { kind: 'domain', key: `route:${hostKey(best)}`, domain: d, host: best };
  if (routing.default.type === 'smarthost') {
    return { kind: 'smarthost', key: `route:${hostKey(routing.default.smarthost)}`, domain: d, host: routing.default.smarthost };
  }
  return { kind: 'mx', key: `mx:${d}`, domain: d };
}

export function routeLabel(kind: Route['kind'] | 'backup'): RouteKind {
  return kind;
}
