/**
 * Whether DNS serves the DKIM records of an SmtpRelay's status.dkim: asked of a Ready pod of the fleet
 * (POST /dns/checks, through its dns.servers) when the records change and every check interval, and
 * merged into status.dkim[] as `published`, `dnsResult`, `dnsMessage`. Between checks, and after an
 * operator restart until the first one, the last results in status stand (no churn at rest); a
 * temporary failure (LookupFailed) does not overwrite a definitive result.
 */
import type { Logger } from 'pino';
import type { DkimTxtCheck, DnsChecksResponse } from '../../../relay/src/contract/index.js';
import { errorText } from '../errors.js';
import type { RelayAdmin } from './admin-client.js';
import type { DkimRecord } from './dkim.js';
import type { PodFigures } from './figures.js';

/** After a failed check, the next try. */
const RETRY_MS = 30_000;
const CHECK_TIMEOUT_MS = 30_000;

/** status.dkim with the DNS results: `checks` by record name (a check of another value is ignored). */
export function withDnsResults(
  records: DkimRecord[],
  checks: Map<string, DkimTxtCheck & { value: string }> | undefined,
  previous: DkimRecord[] | undefined,
): DkimRecord[] {
  return records.map((r) => {
    if (!r.value) return r;
    const before = previous?.find((p) => p.name === r.name && p.value === r.value && p.dnsResult);
    const c = checks?.get(r.name);
    const fresh = c && c.value === r.value ? c : undefined;
    if (!fresh || (fresh.result === 'LookupFailed' && before && before.dnsResult !== 'LookupFailed')) {
      return before
        ? {
            ...r,
            published: before.published!,
            dnsResult: before.dnsResult!,
            ...(before.dnsMessage ? { dnsMessage: before.dnsMessage } : {}),
          }
        : r;
    }
    return {
      ...r,
      published: fresh.result === 'Published',
      dnsResult: fresh.result,
      dnsMessage: fresh.message,
    };
  });
}

/** What a check covers: each record's name and value. */
const signature = (records: DkimRecord[]) =>
  JSON.stringify(records.filter((r) => r.value).map((r) => [r.name, r.value]));

export class DkimDnsChecker {
  /** Per relay `ns/name`: the last check (bounded by the relays watched; forget() on deletion). */
  private readonly last = new Map<
    string,
    { sig: string; at: number; ok: boolean; checks: Map<string, DkimTxtCheck & { value: string }> }
  >();

  constructor(
    private readonly intervalMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * status.dkim with DNS results, checking through a Ready pod when due (the relay controller runs every
   * status interval, far more often than checks are due).
   */
  async annotate(
    key: string,
    records: DkimRecord[],
    previous: DkimRecord[] | undefined,
    figures: PodFigures[],
    admin: (ip: string) => RelayAdmin,
    log: Logger,
  ): Promise<{ dkim: DkimRecord[] }> {
    const sig = signature(records);
    const withValue = records.filter((r): r is DkimRecord & { value: string } => !!r.value);
    let last = this.last.get(key);
    if (!withValue.length) return { dkim: records };
    const now = this.now();
    const due = !last || last.sig !== sig || now >= last.at + (last.ok ? this.intervalMs : RETRY_MS);
    if (due) {
      const pod = figures.find((f) => f.ready && f.ip && !f.draining && !f.error);
      if (!pod)
        return { dkim: withDnsResults(records, last?.sig === sig ? last.checks : undefined, previous) };
      try {
        const res = await admin(pod.ip!).call<DnsChecksResponse>(
          'POST',
          '/dns/checks',
          { dkim: withValue.map((r) => ({ domain: r.domain, selector: r.selector, record: r.value })) },
          CHECK_TIMEOUT_MS,
        );
        const checks = new Map(
          res.dkim.map((c, i) => [withValue[i].name, { ...c, value: withValue[i].value }]),
        );
        last = { sig, at: now, ok: true, checks };
      } catch (e) {
        log.warn({ pod: pod.name, err: errorText(e) }, 'dkim.dns-check.failed');
        last = { sig, at: now, ok: false, checks: last?.sig === sig ? last.checks : new Map() };
      }
      this.last.set(key, last);
    }
    return { dkim: withDnsResults(records, last!.checks, previous) };
  }

  forget(key: string): void {
    this.last.delete(key);
  }
}
