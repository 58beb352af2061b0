/**
 * Apply: spec.queue.suspend and the purge annotation on every ready relay of a fleet. The decisions are
 * pure (suspend.ts, purge.ts); this calls the relays' admin APIs, remembers what it did until the
 * informer shows it (held counts, purge bookkeeping), writes the events and returns the status parts.
 */
import type { Logger } from 'pino';
import type { SmtpRelay, SmtpRelayStatus } from '../api/types.js';
import type { Problem } from '../conditions.js';
import { errorText } from '../errors.js';
import type { EventRecorder } from '../events.js';
import type { QueueSuspension, RelayAdmin } from './admin-client.js';
import { FIGURES_GRACE_MS, type PodFigures } from './figures.js';
import {
  PURGE_ANNOTATION,
  lastPurgeOf,
  parsePurge,
  planPurge,
  recordPurge,
  type LastPurge,
  type PurgeState,
} from './purge.js';
import {
  applyCall,
  decideSuspensions,
  describeSelector,
  suspendedStatus,
  suspensionKey,
  wantedSuspensions,
  type PodSuspensions,
  type SuspensionCall,
} from './suspend.js';

export class QueueOps {
  /** Per relay pod (namespace/pod): its queue suspensions as last read, for a read that fails. */
  private readonly lastSuspensions = new Map<string, { at: number; list: QueueSuspension[] }>();
  /** Per relay pod and suspension: the messages it held when the operator suspended it. */
  private readonly heldCounts = new Map<string, number>();
  /**
   * Per SmtpRelay: the purge bookkeeping this process wrote last; it stands in for a status the
   * informer has not caught up with yet, so a pod never runs a purge twice.
   */
  private readonly purges = new Map<string, { state: PurgeState; last?: LastPurge }>();

  constructor(private readonly events: EventRecorder) {}

  /**
   * spec.queue.suspend and the purge annotation on every ready relay. Suspensions are level-based: each
   * reconcile reads every relay's suspensions and calls only where they differ from the spec (no call
   * when in line). A purge runs once per pod listed in status.purge.
   */
  async sync(
    relay: SmtpRelay,
    figures: PodFigures[],
    replicas: number,
    admin: (ip: string) => RelayAdmin,
    log: Logger,
    now: Date,
  ): Promise<{ problems: Problem[]; status: Pick<SmtpRelayStatus, 'queue' | 'purge' | 'lastPurge'> }> {
    const ns = relay.metadata.namespace!;
    const name = relay.metadata.name!;
    const problems: Problem[] = [];
    const tenants = (relay.spec.tenants ?? []).map((t) => t.name);
    const ready = figures.filter((f) => f.ready && f.ip);
    const ipOf = (pod: string) => ready.find((f) => f.name === pod)!.ip!;

    // --- suspensions
    const want = wantedSuspensions(
      (relay.spec.queue?.suspend ?? []).filter((q) => !q.tenant || tenants.includes(q.tenant)),
      `spec.queue.suspend of SmtpRelay ${ns}/${name}`,
    );
    const failed: string[] = [];
    const read = await Promise.all(
      ready.map(async (f): Promise<(PodSuspensions & { fresh: boolean }) | undefined> => {
        const key = `${ns}/${f.name}`;
        try {
          const list = await admin(f.ip!).suspensions();
          this.lastSuspensions.set(key, { at: Date.now(), list });
          return { pod: f.name, suspensions: list, fresh: true };
        } catch (e) {
          const last = this.lastSuspensions.get(key);
          if (last && Date.now() - last.at < FIGURES_GRACE_MS)
            return { pod: f.name, suspensions: last.list, fresh: false };
          failed.push(`${f.name}: ${errorText(e)}`);
          return undefined;
        }
      }),
    );
    const views = read.filter((v): v is PodSuspensions & { fresh: boolean } => !!v);
    const calls = decideSuspensions(
      want,
      views.filter((v) => v.fresh),
    );
    const heldKey = (pod: string, s: { tenant?: string; domain?: string }) =>
      `${ns}/${pod}|${suspensionKey(s)}`;
    const done: { call: SuspensionCall; count: number }[] = [];
    await Promise.all(
      views.map(async (v) => {
        for (const c of calls.filter((x) => x.pod === v.pod)) {
          const sel = {
            ...(c.tenant ? { tenant: c.tenant } : {}),
            ...(c.domain ? { domain: c.domain } : {}),
          };
          try {
            let count: number;
            if (c.op === 'suspend') {
              count = (await admin(ipOf(c.pod)).suspend({ ...sel, reason: c.reason })).held;
              this.heldCounts.set(heldKey(c.pod, c), count);
            } else {
              count = (await admin(ipOf(c.pod)).resume(sel)).released;
              this.heldCounts.delete(heldKey(c.pod, c));
            }
            v.suspensions = applyCall(v.suspensions, c, now);
            this.lastSuspensions.set(`${ns}/${v.pod}`, { at: Date.now(), list: v.suspensions });
            done.push({ call: c, count });
            log.info({ pod: c.pod, op: c.op, ...sel, count }, 'queue.suspension.applied');
          } catch (e) {
            failed.push(`${c.pod}: ${c.op} ${describeSelector(c)}: ${errorText(e)}`);
          }
        }
      }),
    );
    for (const op of ['suspend', 'resume'] as const) {
      const byKey = new Map<string, { call: SuspensionCall; pods: string[]; count: number }>();
      for (const d of done.filter((x) => x.call.op === op)) {
        const k = suspensionKey(d.call);
        const g = byKey.get(k) ?? { call: d.call, pods: [], count: 0 };
        g.pods.push(d.call.pod);
        g.count += d.count;
        byKey.set(k, g);
      }
      for (const g of byKey.values()) {
        const what = `queued mail of ${describeSelector(g.call)}`;
        if (g.call.op === 'suspend')
          this.events.emit(relay, {
            type: 'Normal',
            reason: 'QueueSuspended',
            message: `holding ${what} on ${g.pods.sort().join(', ')} (${g.count} held): ${g.call.reason}`,
            always: true,
          });
        else
          this.events.emit(relay, {
            type: 'Normal',
            reason: 'QueueResumed',
            message: `released ${what} on ${g.pods.sort().join(', ')} (${g.count} released)`,
            always: true,
          });
      }
    }
    if (failed.length && (want.length || calls.length))
      problems.push({
        reason: 'QueueSuspendFailed',
        message: `spec.queue.suspend not applied on ${failed.sort().join('; ')}`,
      });
    const suspended = suspendedStatus(
      want,
      views.sort((a, b) => a.pod.localeCompare(b.pod, 'en', { numeric: true })),
      (pod, s) => (typeof s.held === 'number' ? s.held : this.heldCounts.get(heldKey(pod, s))),
      relay.status?.queue?.suspended,
    );

    // --- purge
    const parsed = parsePurge(relay.metadata.annotations?.[PURGE_ANNOTATION], tenants);
    if (parsed.error) problems.push({ reason: 'InvalidPurge', message: parsed.error });
    const key = `${ns}/${name}`;
    const memo = this.purges.get(key);
    const request = parsed.request;
    const mine = memo && memo.state.id === request?.id ? memo : undefined;
    const plan = planPurge({
      request,
      state: mine?.state ?? relay.status?.purge,
      pods: figures.map((f) => ({ name: f.name, ready: f.ready && !!f.ip })),
      replicas,
      now,
    });
    let state = plan.state;
    for (const pod of plan.run) {
      if (!request || !state) break;
      try {
        // a relay still indexing its spool after a start would miss what it has not found yet
        const q = (await admin(ipOf(pod)).queue()) as { recovering?: boolean };
        if (q.recovering) {
          state = recordPurge(state, pod, { error: 'the relay is still indexing its spool; waiting' });
          continue;
        }
        const result = await admin(ipOf(pod)).purge({
          ...(request.tenant ? { tenant: request.tenant } : {}),
          ...(request.domain ? { domain: request.domain } : {}),
          dsn: request.dsn,
        });
        state = recordPurge(state, pod, { result });
        log.info({ pod, id: request.id, ...result }, 'queue.purged');
      } catch (e) {
        state = recordPurge(state, pod, { error: errorText(e) });
        log.warn({ pod, id: request.id, err: errorText(e) }, 'queue.purge.failed');
        this.events.emit(relay, {
          type: 'Warning',
          reason: 'PurgeFailed',
          message: `purge ${request.id} on ${pod}: ${errorText(e)}; retrying`,
        });
      }
      // remembered before the next call, so a failure further on cannot make this pod run it again
      this.purges.set(key, { state, ...(mine?.last ? { last: mine.last } : {}) });
    }
    const previous = mine?.last ?? relay.status?.lastPurge;
    const lastPurge = lastPurgeOf(request, state, previous, now);
    if (state && request) this.purges.set(key, { state, ...(lastPurge ? { last: lastPurge } : {}) });
    if (state && lastPurge && lastPurge !== previous) {
      this.events.emit(relay, {
        type: 'Normal',
        reason: 'Purged',
        message:
          `purge ${lastPurge.id} (${describeSelector(lastPurge)}${request?.dsn ? ', with DSNs' : ''}) ran on ` +
          `${lastPurge.pods} pod(s): ${lastPurge.purged} messages purged, ${lastPurge.dsn} bounced with a DSN, ` +
          `${lastPurge.busy} busy (in delivery, not purged)`,
        always: true,
      });
    }
    return {
      problems,
      status: {
        queue: { suspended },
        ...(state ? { purge: state } : {}),
        ...(lastPurge ? { lastPurge } : {}),
      },
    };
  }

  /** Forgets a relay that is gone. */
  forgetRelay(ns: string, name: string): void {
    for (const m of [this.lastSuspensions, this.heldCounts])
      for (const k of [...m.keys()]) if (k.startsWith(`${ns}/${name}-`)) m.delete(k);
    this.purges.delete(`${ns}/${name}`);
  }
}
