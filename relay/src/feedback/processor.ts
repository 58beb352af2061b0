/**
 * Feeds what the feedback listener received into what exists (docs/adr/016-feedback-loop.md): a hard
 * bounce into the suppression list (source `bounce`, through TenantRuntime.onOutcome as a bounce in the
 * session would) and the bounce-rate guard; a complaint into the suppression list (source `complaint`)
 * and the ComplaintSink; both as events. The suppression list's change feed carries them to every pod
 * (the operator's fleet sync). Reports that match nothing are counted and the last few kept in memory.
 * A report seen again (same tenant, queue id, recipient and kind) is counted once: a bounded memory.
 * A report to a feedback address without a token is first traced through the sent-message index (ADR 020):
 * the lookup is I/O, done here; decide() stays pure and gets its result.
 */
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { RelayConfig } from '../config.js';
import type { EventSink } from '../events/sink.js';
import type { UnmatchedReportView } from '../contract/admin-api.js';
import type { TenantRuntime } from '../tenant-runtime.js';
import { decide, lookupKey, type Decision, type SentLookup, type Target } from './decide.js';
import { readReport } from './report.js';
import { isHardBounce } from '../delivery/classify.js';
import type { ComplaintSink } from './complaints.js';

export { NO_COMPLAINT_GUARD, type ComplaintSink } from './complaints.js';

/** Each kept report is cut to this. */
export const UNMATCHED_MAX_BYTES = 64 * 1024;
/** Reports remembered to count a repeat once. */
export const SEEN_CAP = 10_000;

/** A kept report (the admin API's view, in the contract). */
export type UnmatchedReport = UnmatchedReportView;

export class FeedbackMetrics {
  readonly received: Counter<'kind' | 'result'>;
  readonly refused: Counter<'reason'>;
  kept: () => number = () => 0;
  seen: () => number = () => 0;

  constructor(r: Registry) {
    this.received = new Counter({
      name: 'cartero_feedback_received_total',
      help: 'Reports the feedback listener received, per address taken: kind dsn, arf, unknown; result bounce (hard), soft (a 5.x.x that is not hard), complaint, repeat (the recipient is already suppressed for the same reason: the event goes out, the rate is not counted again), ignored (delayed, 4.x.x), duplicate (seen moments ago), unmatched.',
      labelNames: ['kind', 'result'],
      registers: [r],
    });
    this.refused = new Counter({
      name: 'cartero_feedback_refused_total',
      help: 'RCPT refused by the feedback listener: foreign (not a bounce domain or feedback address), forged, expired, malformed, version, no-key; limit counts the connections closed after 20 refused RCPTs.',
      labelNames: ['reason'],
      registers: [r],
    });
    const kept = () => this.kept();
    new Gauge({
      name: 'cartero_feedback_unmatched_kept',
      help: 'Unmatched reports kept for GET /feedback/unmatched (feedback.unmatchedKeep at most).',
      registers: [r],
      collect() {
        this.set(kept());
      },
    });
    const seen = () => this.seen();
    new Gauge({
      name: 'cartero_feedback_seen_entries',
      help: `Reports remembered to count repeats once (at most ${SEEN_CAP}).`,
      registers: [r],
      collect() {
        this.set(seen());
      },
    });
  }
}

export interface ProcessorDeps {
  cfg: () => RelayConfig;
  tenancy: () => TenantRuntime;
  /** Read at each report: the relay's sink may be set after the processor is built. */
  events: () => EventSink;
  complaints: () => ComplaintSink;
  metrics: FeedbackMetrics;
  log: Logger;
  now: () => number;
  /**
   * The sent message a report without a token names by its Message-ID (a messageKey), for `tenant`: this
   * relay's index, then the fleet's (wire.ts). Absent: such reports end unmatched.
   */
  sent?: (key: string, tenant: string) => Promise<SentLookup>;
}

/**
 * Whether the suppression list already holds what this report would add: a hard bounce of a recipient
 * suppressed after a bounce, a complaint of one suppressed after a complaint. The list is durable and the
 * same on every pod (the fleet sync), so a report replayed (a recipient resending a DSN to the return path
 * of a message they got, to another pod, after a restart, or after `seen` forgot it) is counted in the
 * bounce or complaint rate once per recipient, not once per copy.
 */
export function alreadyCounted(dec: Decision, suppressedBy: string | undefined): boolean {
  if (dec.result === 'complaint') return suppressedBy === 'complaint';
  return dec.result === 'bounce' && isHardBounce(dec.status) && suppressedBy === 'bounce';
}

export class FeedbackProcessor {
  private readonly unmatched: UnmatchedReport[] = [];
  private readonly seen = new Set<string>();

  constructor(private readonly d: ProcessorDeps) {
    d.metrics.kept = () => this.unmatched.length;
    d.metrics.seen = () => this.seen.size;
  }

  /** The unmatched reports kept, newest first. */
  list(): UnmatchedReport[] {
    return [...this.unmatched].reverse();
  }

  /**
   * One received message, for each address the listener took it for. Throws, after every address was
   * tried, when what the report changes could not be written (the suppression list on a full disk): the
   * listener answers 451 and the sender tries again (what was applied is then a duplicate or a repeat).
   */
  async handle(rcpts: { address: string; target: Target }[], raw: Buffer): Promise<Decision[]> {
    const cfg = this.d.cfg();
    const now = this.d.now();
    const report = readReport(raw);
    const out: Decision[] = [];
    let failed: Error | undefined;
    const lookups = new Map<string, SentLookup>(); // one per Message-ID and tenant, whatever the RCPTs
    for (const { address, target } of rcpts) {
      const key = lookupKey(cfg, report, target, now);
      let sent = key ? lookups.get(`${target.tenant}\0${key}`) : undefined;
      if (key && !sent && this.d.sent) {
        sent = await this.d.sent(key, target.tenant);
        lookups.set(`${target.tenant}\0${key}`, sent);
      }
      const dec = decide(cfg, report, target, now, sent);
      out.push(dec);
      try {
        const result = await this.apply(dec);
        this.d.metrics.received.inc({ kind: report.kind, result });
        if (result === 'unmatched') this.keep(address, dec, report.kind, raw);
      } catch (e) {
        failed ??= e as Error;
        this.d.log.error(
          { event: 'feedback.failed', rcpt: address, err: (e as Error).message },
          'could not apply a feedback report',
        );
      }
    }
    if (failed) throw new Error(`not applied (${failed.message})`);
    return out;
  }

  private remember(k: string): boolean {
    if (this.seen.has(k)) return false;
    if (this.seen.size >= SEEN_CAP) this.seen.delete(this.seen.values().next().value!);
    this.seen.add(k);
    return true;
  }

  private async apply(dec: Decision): Promise<string> {
    if (dec.result === 'unmatched' || dec.result === 'ignored') {
      this.d.log.info(
        { event: `feedback.${dec.result}`, tenant: dec.tenant, reason: dec.reason },
        `feedback report ${dec.result}`,
      );
      return dec.result;
    }
    const cfg = this.d.cfg();
    if (!cfg.tenants.has(dec.tenant)) return 'unmatched';
    const seenKey = `${dec.result}|${dec.tenant}|${dec.queueId ?? ''}|${dec.recipient}`;
    if (!this.remember(seenKey)) return 'duplicate';
    try {
      return await this.applyNew(dec);
    } catch (e) {
      this.seen.delete(seenKey); // not applied: applied when the report comes again
      throw e;
    }
  }

  private async applyNew(dec: Extract<Decision, { result: 'bounce' | 'complaint' }>): Promise<string> {
    const cfg = this.d.cfg();
    const tenancy = this.d.tenancy();
    // the event still goes out (the tenant hears about every message), the rates are not counted again
    const counted = alreadyCounted(dec, tenancy.suppressions.isSuppressed(dec.tenant, dec.recipient)?.source);
    const base = {
      tenant: dec.tenant,
      recipient: dec.recipient,
      // with a queue id, the report received again (after a restart forgot `seen`) keeps its event id
      ...(dec.queueId
        ? {
            queueId: dec.queueId,
            key: `feedback\0${dec.result}\0${dec.tenant}\0${dec.queueId}\0${dec.recipient}`,
          }
        : {}),
    };
    if (dec.result === 'bounce') {
      // the same hard/soft rule as a bounce in the session: a 5.1.x is hard (suppressed, in the rate)
      const hard = isHardBounce(dec.status);
      const text = dec.diagnostic ?? `asynchronous bounce ${dec.status}`;
      if (!counted)
        await tenancy.onOutcome(dec.tenant, dec.recipient, 'bounced', dec.status, `async bounce: ${text}`);
      this.d.events().emit({
        type: 'bounced',
        ...base,
        bounce: { class: hard ? 'hard' : 'soft', async: true },
        reply: { enhanced: dec.status, text: text.slice(0, 500) },
      });
      this.d.log.info(
        {
          event: 'feedback.bounce',
          tenant: dec.tenant,
          to: dec.recipient,
          queueId: dec.queueId,
          status: dec.status,
          hard,
          counted: !counted,
        },
        `asynchronous ${hard ? 'hard' : 'soft'} bounce`,
      );
      return counted ? 'repeat' : hard ? 'bounce' : 'soft';
    }
    const t = cfg.tenants.get(dec.tenant)!;
    if (t.suppression.enabled && !counted)
      await tenancy.suppressions.add({
        tenant: dec.tenant,
        address: dec.recipient,
        reason: `complaint (${dec.feedbackType})${dec.reporter ? ` from ${dec.reporter}` : ''}`.slice(0, 300),
        source: 'complaint',
        ttlMs: t.suppression.ttlMs,
      });
    if (!counted) this.d.complaints().complaint(dec.tenant, dec.recipient);
    this.d.events().emit({
      type: 'complained',
      ...base,
      complaint: { feedbackType: dec.feedbackType, ...(dec.reporter ? { reporter: dec.reporter } : {}) },
    });
    this.d.log.info(
      { event: 'feedback.complaint', tenant: dec.tenant, to: dec.recipient, type: dec.feedbackType },
      counted
        ? 'complaint received again for a recipient suppressed after one'
        : 'complaint received; recipient suppressed',
    );
    return counted ? 'repeat' : 'complaint';
  }

  private keep(rcpt: string, dec: Decision, kind: string, raw: Buffer): void {
    const max = this.d.cfg().feedback.unmatchedKeep;
    if (max === 0) return;
    this.unmatched.push({
      at: new Date(this.d.now()).toISOString(),
      rcpt,
      ...(dec.tenant ? { tenant: dec.tenant } : {}),
      reason: 'reason' in dec ? dec.reason : dec.result,
      kind,
      size: raw.length,
      text: raw.subarray(0, UNMATCHED_MAX_BYTES).toString('latin1'),
    });
    while (this.unmatched.length > max) this.unmatched.shift();
  }
}
