/**
 * Decide: an IpPool's DNS identity status from the checks a relay pod ran (POST /dns/checks, FCrDNS of
 * each address for its EHLO name): status.addresses, status.verified, the ReverseDNSVerified condition,
 * which addresses requireFcrdns lets the allocator give out, and when to check again. Pure functions.
 *
 * No churn at rest: an address's entry changes only when its result, PTR names or message change; its
 * `since` is when the current result was first seen. A temporary failure (LookupFailed) does not
 * overwrite a definitive result seen before.
 */
import type { IpPool, IpPoolStatus } from '../api/types.js';
import type { Condition } from '../api/types.js';
import { setCondition } from '../conditions.js';
import type { FcrdnsCheck, FcrdnsResult } from '../../../relay/src/contract/index.js';

export type AddressDns = NonNullable<IpPoolStatus['addresses']>[number];

/** The condition's reason when not every address is verified: the first of these any address has. */
const WORST_FIRST: FcrdnsResult[] = ['PtrMissing', 'ForwardMismatch', 'EhloMismatch', 'LookupFailed'];
/** Addresses named per result in the condition message (the rest are counted). */
const NAMED = 8;

const iso = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

/**
 * status.addresses after a check (`checks`), or without one (undefined: the entries of the last check
 * stay, for addresses still in the spec with the same EHLO name). In spec order; unchecked addresses are
 * absent.
 */
export function addressEntries(pool: IpPool, checks: FcrdnsCheck[] | undefined, now: Date): AddressDns[] {
  const prev = new Map((pool.status?.addresses ?? []).map((a) => [`${a.ip} ${a.ehlo}`, a]));
  const got = new Map((checks ?? []).map((c) => [`${c.ip} ${c.ehlo}`, c]));
  const out: AddressDns[] = [];
  for (const a of pool.spec.addresses) {
    const key = `${a.ip} ${a.ehlo}`;
    const before = prev.get(key);
    const c = got.get(key);
    if (!c || (c.result === 'LookupFailed' && before && before.result !== 'LookupFailed')) {
      if (before) out.push(before);
      continue;
    }
    const ptr = [...c.ptr].sort();
    out.push({
      ip: a.ip,
      ehlo: a.ehlo,
      ptr,
      result: c.result,
      message: c.message,
      since: before?.result === c.result && before.since ? before.since : iso(now),
    });
  }
  return out;
}

/**
 * Which addresses the allocator may give to a new pod: all without requireFcrdns; with it, the verified
 * ones, or, while no address of the pool was ever checked and none is allocated (a fleet's first
 * start: no relay pod exists to check from), the first address only, so that one pod can start.
 */
export function allocatable(pool: IpPool, entries: AddressDns[]): (ip: string) => boolean {
  if (!pool.spec.requireFcrdns) return () => true;
  if (!entries.length && !(pool.status?.allocations ?? []).length) {
    const first = pool.spec.addresses[0]?.ip;
    return (ip) => ip === first;
  }
  const ok = new Set(entries.filter((e) => e.result === 'Verified').map((e) => e.ip));
  return (ip) => ok.has(ip);
}

export interface DnsStatusInput {
  entries: AddressDns[];
  /** No Ready relay pod of a relay using the pool could run the check. */
  noResolver: boolean;
  /** The check was asked for and failed (the relay's error). */
  checkError?: string;
}

/** status.addresses, status.verified and the conditions (ReverseDNSVerified; Degraded for requireFcrdns). */
export function dnsStatus(pool: IpPool, status: IpPoolStatus, i: DnsStatusInput, now: Date): IpPoolStatus {
  const gen = pool.metadata.generation;
  const size = pool.spec.addresses.length;
  const verified = i.entries.filter((e) => e.result === 'Verified');
  const checked = new Set(i.entries.map((e) => e.ip));
  const unchecked = pool.spec.addresses.filter((a) => !checked.has(a.ip)).map((a) => a.ip);
  let c: Pick<Condition, 'status' | 'reason' | 'message'>;
  if (unchecked.length && (i.noResolver || i.checkError)) {
    c = {
      status: 'Unknown',
      reason: i.noResolver ? 'NoResolver' : 'CheckFailed',
      message:
        `${unchecked.length} of ${size} addresses not checked yet: ` +
        (i.noResolver
          ? 'no Ready relay pod of a relay using this pool to check from (the checks use its dns.servers)'
          : `the check failed: ${i.checkError}`),
    };
  } else if (verified.length === size) {
    c = {
      status: 'True',
      reason: 'Verified',
      message: `all ${size} addresses have forward-confirmed reverse DNS for their EHLO name`,
    };
  } else {
    const by = (r: FcrdnsResult) => i.entries.filter((e) => e.result === r).map((e) => e.ip);
    const parts = WORST_FIRST.filter((r) => by(r).length).map((r) => {
      const ips = by(r);
      return `${r}: ${ips.slice(0, NAMED).join(', ')}${ips.length > NAMED ? ` and ${ips.length - NAMED} more` : ''}`;
    });
    if (unchecked.length) parts.push(`not checked yet: ${unchecked.length}`);
    c = {
      status: unchecked.length && !parts.length ? 'Unknown' : 'False',
      reason: WORST_FIRST.find((r) => by(r).length) ?? 'Unchecked',
      message: `${verified.length} of ${size} addresses verified; ${parts.join('; ')} (see status.addresses)`,
    };
  }
  let conditions = setCondition(status.conditions, { type: 'ReverseDNSVerified', ...c }, gen, now);
  if (pool.spec.requireFcrdns) {
    const ok = new Set(verified.map((e) => e.ip));
    const bad = (status.allocations ?? []).filter((a) => checked.has(a.ip) && !ok.has(a.ip));
    const degraded = conditions.find((x) => x.type === 'Degraded');
    if (bad.length && degraded?.status !== 'True')
      conditions = setCondition(
        conditions,
        {
          type: 'Degraded',
          status: 'True',
          reason: 'UnverifiedAllocated',
          message: `requireFcrdns: allocated addresses whose reverse DNS is not verified stay allocated: ${bad.map((a) => `${a.ip} (${a.pod})`).join(', ')}`,
        },
        gen,
        now,
      );
  }
  return {
    ...status,
    verified: `${verified.length}/${size}`,
    ...(i.entries.length ? { addresses: i.entries } : {}),
    conditions,
  };
}

/** Milliseconds until the pool's next check: 0 when due (never checked, spec changed, interval passed). */
export function checkDueIn(
  last: { sig: string; at: number } | undefined,
  sig: string,
  intervalMs: number,
  now: number,
): number {
  if (!last || last.sig !== sig) return 0;
  return Math.max(0, last.at + intervalMs - now);
}

/** What a check depends on: the addresses and their EHLO names. */
export const checkSignature = (pool: IpPool) =>
  JSON.stringify(pool.spec.addresses.map((a) => [a.ip, a.ehlo]));
