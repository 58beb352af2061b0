/**
 * The pure decisions of one delivery attempt, apart from the engine's scheduling loop (engine.ts): which
 * jobs a due message becomes (recipients grouped by route, or one hand-off while draining), how long a
 * paused tenant's message is held, what a failed load means, and whom to tell when the queued copy is
 * damaged. What the outcomes then change (state, DSNs, retry time) is outcomes.ts.
 */
import type { RelayConfig } from '../config.js';
import { dsnRecipientsWanted, type DsnRecipient } from '../dsn.js';
import type { TenantState } from '../guard.js';
import { selectRoute, type Route } from '../router.js';
import { SpoolCorruptError, type SpooledMessage } from '../spool/types.js';
import { domainOf, type ActiveMessage, type Job } from './types.js';

/** Domains of the recipients still pending (the queue index keeps them for suspensions and purges). */
export function pendingDomains(m: SpooledMessage): string[] {
  const s = new Set<string>();
  m.state.rcpts.forEach((r, i) => {
    if (r.status === 'pending') s.add(domainOf(m.env.rcpts[i].address));
  });
  return [...s];
}

/** The route of a hand-off job: the drain's peers are tried in order by runHandoff, not routed. */
export const HANDOFF_ROUTE: Route = {
  kind: 'domain',
  key: 'handoff',
  domain: 'handoff',
  host: { host: 'peers', port: 0, tls: 'none' },
};

/**
 * The jobs one attempt of `m` runs. Draining: every pending recipient goes to a peer relay in one
 * transaction. Otherwise the pending recipients not `held` (by a domain suspension) are grouped by route
 * and by DSN parameters, since nodemailer sends one NOTIFY/ORCPT per transaction (or, with perRecipient,
 * one job per recipient).
 */
export function planJobs(
  m: ActiveMessage,
  o: {
    draining: boolean;
    routing: RelayConfig['routing'];
    held: (rcpt: number) => boolean;
    /** Each recipient in its own transaction (return-path tagging: one token per recipient). */
    perRecipient?: boolean;
  },
): Omit<Job, 'resolve'>[] {
  const pending = m.state.rcpts.map((r, i) => (r.status === 'pending' ? i : -1)).filter((i) => i >= 0);
  if (o.draining) return [{ handoff: true, msg: m, route: HANDOFF_ROUTE, rcpts: pending }];
  const groups = new Map<string, { route: Route; rcpts: number[] }>();
  for (const i of pending) {
    const rc = m.env.rcpts[i];
    if (o.held(i)) continue;
    const route = selectRoute(o.routing, domainOf(rc.address));
    const k = `${route.key}|${rc.notify?.join(',') ?? ''}|${rc.orcpt ?? ''}${o.perRecipient ? `|${i}` : ''}`;
    let g = groups.get(k);
    if (!g) groups.set(k, (g = { route, rcpts: [] }));
    g.rcpts.push(i);
  }
  return [...groups.values()].map((g) => ({ msg: m, route: g.route, rcpts: g.rcpts }));
}

/**
 * Until when a paused tenant's due message is held without loading it, or undefined when the tenant is not
 * paused. Checked again at least every minute, so an admin resume takes effect within a minute.
 */
export function pauseHold(t: Pick<TenantState, 'state' | 'pausedUntil'>, now: number): number | undefined {
  if (t.state !== 'paused') return undefined;
  return Math.max(now + 1, Math.min(t.pausedUntil ?? Infinity, now + 60_000));
}

/** A load failed because the message's file was removed meanwhile (purged, or delivered by an earlier run). */
export const isGone = (e: unknown): boolean => (e as NodeJS.ErrnoException).code === 'ENOENT';

/**
 * The error to throw for a failed load of message `id` that is not isGone: an envelope that does not parse
 * is damage (a SpoolCorruptError, and the file is set aside); an errno such as EIO or EMFILE may pass.
 */
export function loadError(e: unknown, id: string): unknown {
  if (e instanceof SpoolCorruptError || !(e as NodeJS.ErrnoException).code)
    return new SpoolCorruptError(id, (e as Error).message.replace(/^queue file \S+: /, ''));
  return e;
}

/** The pending recipients to tell, in a failure DSN, that the queued copy was damaged and never sent. */
export function damagedCopyRecipients(m: ActiveMessage, now: number): DsnRecipient[] {
  return m.state.rcpts
    .map((r, i) => ({ r, i }))
    .filter(
      ({ r, i }) => r.status === 'pending' && dsnRecipientsWanted(m.env.rcpts[i].notify?.join(','), 'failed'),
    )
    .map(
      ({ i }) =>
        ({
          address: m.env.rcpts[i].address,
          orcpt: m.env.rcpts[i].orcpt,
          action: 'failed',
          status: '5.3.0',
          diagnostic: "the queued copy of this message was damaged on the relay's disk and could not be sent",
          lastAttemptAt: new Date(now),
        }) as DsnRecipient,
    );
}
