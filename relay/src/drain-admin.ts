/**
 * Admin endpoints for draining a relay before it goes away (the operator calls them on scale-down):
 *
 *   GET  /drain                  -> DrainStatus
 *   POST /drain  {peers?: [{host, port, tls?}]}  -> 202 DrainStatus; hand-off to the peers, or delivery
 *
 * The drain itself (stop accepting, persist, hand off or flush) is Relay.drain in relay.ts.
 */
import type { OutboundTls } from './config.js';
import type { DrainStatus } from './contract/admin-api.js';
import { HttpError, type AdminServer } from './admin.js';

export interface DrainPeer {
  host: string;
  port: number;
  tls?: OutboundTls;
}

const TLS_MODES = ['none', 'opportunistic', 'required', 'implicit'];

/**
 * The peers of a POST /drain body. A drain cannot be undone, so a mistyped body must not start one with
 * defaults: an unknown field or a malformed peer is a 400. No `peers` means: deliver what is queued.
 */
export function parseDrainPeers(body: Record<string, unknown>): DrainPeer[] {
  const unknown = Object.keys(body).filter((k) => k !== 'peers');
  if (unknown.length)
    throw new HttpError(400, `unknown field ${JSON.stringify(unknown[0])}; the body is {"peers": [...]}`);
  if (body.peers !== undefined && !Array.isArray(body.peers))
    throw new HttpError(400, 'peers must be a list');
  const peers = Array.isArray(body.peers) ? (body.peers as unknown[]) : [];
  const ok = peers.every((p: unknown) => {
    if (p === null || typeof p !== 'object') return false;
    const q = p as { host?: unknown; port?: unknown; tls?: unknown };
    return (
      typeof q.host === 'string' &&
      Number.isInteger(q.port) &&
      (q.port as number) > 0 &&
      (q.port as number) < 65536 &&
      (q.tls === undefined || TLS_MODES.includes(q.tls as string))
    );
  });
  if (!ok)
    throw new HttpError(
      400,
      'peers must be [{"host": "...", "port": N, "tls"?: "none"|"opportunistic"|"required"|"implicit"}]',
    );
  return peers as DrainPeer[];
}

export function registerDrainOps(
  admin: AdminServer,
  o: { status: () => DrainStatus & Record<string, unknown>; drain: (peers: DrainPeer[]) => Promise<void> },
): void {
  admin.route('GET', '/drain', () => [200, o.status()]);
  admin.route('POST', '/drain', async (r) => {
    await o.drain(parseDrainPeers(await r.body()));
    return [202, o.status()];
  });
}
