/**
 * Fleet-wide purge, requested with the annotation cartero.io/purge, as pure functions: reading the
 * request, and the bookkeeping that runs it once on every pod that existed when it was seen (kept in
 * status.purge, so an operator restart does not run it twice on a pod, and a pod that joins later never
 * runs an old purge).
 */
import type { SmtpRelayStatus } from '../api/types.js';
import type { PurgeResult, QueueSelector } from './admin-client.js';

export const PURGE_ANNOTATION = 'cartero.io/purge';

export interface PurgeRequest extends QueueSelector {
  id: string;
  dsn: boolean;
}
export type PurgeState = NonNullable<SmtpRelayStatus['purge']>;
export type LastPurge = NonNullable<SmtpRelayStatus['lastPurge']>;

const ID = /^[A-Za-z0-9]([A-Za-z0-9._:-]{0,62})$/;
const DOMAIN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const KEYS = new Set(['id', 'tenant', 'domain', 'dsn']);

/**
 * Reads the annotation. Strict on purpose: a purge deletes mail, so an unknown key (a typo such as
 * "tennant" would otherwise widen the purge to a whole domain), a missing `dsn` or an unknown tenant is
 * an error, and nothing runs.
 */
export function parsePurge(
  value: string | undefined,
  tenants: string[],
): { request?: PurgeRequest; error?: string } {
  if (value === undefined) return {};
  const bad = (why: string) => ({ error: `annotation ${PURGE_ANNOTATION} ignored: ${why}` });
  let v: unknown;
  try {
    v = JSON.parse(value);
  } catch (e) {
    return bad(`not JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v))
    return bad('expected an object like {"id":"2026-12-05-1","tenant":"news","dsn":false}');
  const o = v as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => !KEYS.has(k));
  if (unknown.length) return bad(`unknown field ${unknown.join(', ')} (fields: id, tenant, domain, dsn)`);
  if (typeof o.id !== 'string' || !ID.test(o.id))
    return bad('id must be a string of 1 to 63 letters, digits, ".", "_", ":" or "-", unique per purge');
  if (o.tenant !== undefined && (typeof o.tenant !== 'string' || !tenants.includes(o.tenant)))
    return bad(`tenant ${JSON.stringify(o.tenant)} is not a tenant of spec.tenants`);
  if (o.domain !== undefined && (typeof o.domain !== 'string' || !DOMAIN.test(o.domain.toLowerCase())))
    return bad(`domain ${JSON.stringify(o.domain)} is not a domain name`);
  if (o.tenant === undefined && o.domain === undefined)
    return bad('name a tenant, a domain or both (a purge of the whole queue is not offered)');
  if (typeof o.dsn !== 'boolean')
    return bad('dsn must be true (bounce each message to its sender) or false (delete silently)');
  return {
    request: {
      id: o.id,
      ...(o.tenant !== undefined ? { tenant: o.tenant as string } : {}),
      ...(o.domain !== undefined ? { domain: (o.domain as string).toLowerCase() } : {}),
      dsn: o.dsn,
    },
  };
}

const ordinal = (pod: string) => Number(/-(\d+)$/.exec(pod)?.[1] ?? -1);

/**
 * The purge's bookkeeping for this reconcile and the pods to call now. A new id lists every pod that
 * exists; a listed pod runs it once, when ready. A listed pod that is gone for good (its ordinal is at
 * or above `replicas`: scaled away) is dropped; one that is only restarting keeps its turn, since its
 * queue comes back with its volume.
 */
export function planPurge(o: {
  request: PurgeRequest | undefined;
  state: PurgeState | undefined;
  pods: { name: string; ready: boolean }[];
  replicas: number;
  now: Date;
}): { state: PurgeState | undefined; run: string[] } {
  if (!o.request) return { state: o.state, run: [] };
  let state: PurgeState =
    o.state?.id === o.request.id
      ? structuredClone(o.state)
      : {
          id: o.request.id,
          startedAt: o.now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
          pods: o.pods.map((p) => ({ name: p.name, done: false })),
        };
  const exists = new Set(o.pods.map((p) => p.name));
  state = {
    ...state,
    pods: (state.pods ?? []).filter((p) => p.done || exists.has(p.name) || ordinal(p.name) < o.replicas),
  };
  const ready = new Set(o.pods.filter((p) => p.ready).map((p) => p.name));
  return { state, run: state.pods!.filter((p) => !p.done && ready.has(p.name)).map((p) => p.name) };
}

/** Records one pod's outcome. */
export function recordPurge(
  state: PurgeState,
  pod: string,
  outcome: { result: PurgeResult } | { error: string },
): PurgeState {
  return {
    ...state,
    pods: (state.pods ?? []).map((p) => {
      if (p.name !== pod) return p;
      if ('error' in outcome) return { name: p.name, done: false, error: outcome.error };
      const r = outcome.result;
      return { name: p.name, done: true, purged: r.purged, dsn: r.dsn, busy: r.busy };
    }),
  };
}

/** status.lastPurge: the previous one until every listed pod ran the current purge. */
export function lastPurgeOf(
  request: PurgeRequest | undefined,
  state: PurgeState | undefined,
  previous: LastPurge | undefined,
  now: Date,
): LastPurge | undefined {
  if (!state || previous?.id === state.id) return previous;
  const pods = state.pods ?? [];
  if (pods.some((p) => !p.done)) return previous;
  const sum = (k: 'purged' | 'dsn' | 'busy') => pods.reduce((a, p) => a + (p[k] ?? 0), 0);
  return {
    id: state.id,
    ...(request?.id === state.id && request.tenant ? { tenant: request.tenant } : {}),
    ...(request?.id === state.id && request.domain ? { domain: request.domain } : {}),
    pods: pods.length,
    purged: sum('purged'),
    dsn: sum('dsn'),
    busy: sum('busy'),
    completedAt: now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
  };
}
