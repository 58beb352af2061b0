/**
 * Fleet-wide queue suspensions (spec.queue.suspend), as pure functions: which suspend and resume calls
 * bring each relay's suspensions in line with the spec, and what status says about them. The operator
 * owns the suspensions with source `fleet` on the relays; those made through a relay's admin API (source
 * `admin`) are never touched, only reported.
 */
import type { QueueSuspension as SpecSuspension, SmtpRelayStatus } from '../api/types.js';
import type { QueueSelector, QueueSuspension } from './admin-client.js';

export type SuspendedStatus = NonNullable<NonNullable<SmtpRelayStatus['queue']>['suspended']>[number];

/** One relay's suspensions as its admin API reported them. */
export interface PodSuspensions {
  pod: string;
  suspensions: QueueSuspension[];
}

export type SuspensionCall =
  | { pod: string; op: 'suspend'; tenant?: string; domain?: string; reason: string }
  | { pod: string; op: 'resume'; tenant?: string; domain?: string };

/** The identity of a suspension on a relay (with its source): tenant and domain, either may be absent. */
export function suspensionKey(s: { tenant?: string | null; domain?: string | null }): string {
  return `${s.tenant || ''}|${(s.domain || '').toLowerCase()}`;
}

/** `tenant news, domain example.com` for messages. */
export function describeSelector(s: QueueSelector): string {
  return [s.tenant ? `tenant ${s.tenant}` : '', s.domain ? `domain ${s.domain}` : '']
    .filter(Boolean)
    .join(', ');
}

function selector(s: { tenant?: string | null; domain?: string | null }): QueueSelector {
  return {
    ...(s.tenant ? { tenant: s.tenant } : {}),
    ...(s.domain ? { domain: s.domain.toLowerCase() } : {}),
  };
}

/** The spec's suspensions as the relays should hold them: without items naming neither, first of duplicates. */
export function wantedSuspensions(
  spec: SpecSuspension[] | undefined,
  defaultReason: string,
): (QueueSelector & { reason: string })[] {
  const out = new Map<string, QueueSelector & { reason: string }>();
  for (const s of spec ?? []) {
    if (!s.tenant && !s.domain) continue;
    const key = suspensionKey(s);
    if (!out.has(key)) out.set(key, { ...selector(s), reason: s.reason || defaultReason });
  }
  return [...out.values()];
}

/**
 * The calls that make every relay hold exactly the wanted suspensions as source `fleet`: a suspend for
 * each one missing or with another reason (the relay replaces it), a resume for each fleet suspension
 * no longer wanted. None when the relays are in line.
 */
export function decideSuspensions(
  want: (QueueSelector & { reason: string })[],
  pods: PodSuspensions[],
): SuspensionCall[] {
  const calls: SuspensionCall[] = [];
  const wanted = new Map(want.map((w) => [suspensionKey(w), w]));
  for (const p of pods) {
    const have = new Map(
      p.suspensions.filter((s) => s.source === 'fleet').map((s) => [suspensionKey(s), s] as const),
    );
    for (const [key, w] of wanted) {
      const h = have.get(key);
      if (!h || h.reason !== w.reason)
        calls.push({ pod: p.pod, op: 'suspend', ...selector(w), reason: w.reason });
    }
    for (const [key, h] of have)
      if (!wanted.has(key)) calls.push({ pod: p.pod, op: 'resume', ...selector(h) });
  }
  return calls;
}

/** A relay's suspensions after a call that succeeded. */
export function applyCall(list: QueueSuspension[], call: SuspensionCall, now: Date): QueueSuspension[] {
  const key = suspensionKey(call);
  const rest = list.filter((s) => !(s.source === 'fleet' && suspensionKey(s) === key));
  if (call.op === 'resume') return rest;
  return [...rest, { ...selector(call), reason: call.reason, source: 'fleet', since: now.toISOString() }];
}

/**
 * status.queue.suspended: the spec's suspensions first (in spec order) with the ready relays holding
 * each, then those made by hand on any relay. `held(pod, s)` is the count a relay last reported for a
 * suspension; when no relay has one, the previous status's figure stands.
 */
export function suspendedStatus(
  want: (QueueSelector & { reason: string })[],
  pods: PodSuspensions[],
  held: (pod: string, s: QueueSuspension) => number | undefined,
  previous: SuspendedStatus[] | undefined,
): SuspendedStatus[] {
  const entry = (
    source: 'Spec' | 'Admin',
    sel: QueueSelector,
    reason: string | undefined,
  ): SuspendedStatus => {
    const key = suspensionKey(sel);
    const holding = pods.flatMap((p) =>
      p.suspensions
        .filter((s) => s.source === (source === 'Spec' ? 'fleet' : 'admin') && suspensionKey(s) === key)
        .map((s) => ({ pod: p.pod, s })),
    );
    const counts = holding.map((h) => held(h.pod, h.s)).filter((n): n is number => typeof n === 'number');
    const before = previous?.find((x) => x.source === source && suspensionKey(x) === key)?.held;
    const total = counts.length ? counts.reduce((a, b) => a + b, 0) : before;
    return {
      ...sel,
      ...(reason ? { reason } : {}),
      source,
      pods: holding.length,
      ...(total !== undefined && holding.length ? { held: total } : {}),
    };
  };
  const out = want.map((w) => entry('Spec', w, w.reason));
  const manual = new Map<string, QueueSuspension>();
  for (const p of pods)
    for (const s of p.suspensions)
      if (s.source !== 'fleet' && !manual.has(suspensionKey(s))) manual.set(suspensionKey(s), s);
  for (const key of [...manual.keys()].sort()) {
    const s = manual.get(key)!;
    out.push(entry('Admin', selector(s), s.reason));
  }
  return out;
}
