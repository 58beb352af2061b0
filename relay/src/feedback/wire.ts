/**
 * The feedback loop's parts as the relay holds them: the processor, the listener, the sent-message index
 * with its fleet lookup (ADR 020), GET /feedback/unmatched and GET /feedback/sent. The relay sets `events` (its EventSink) and `complaints` (the complaint-rate
 * guard) when it has them; until then events are discarded and complaints only counted.
 */
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { AdminServer } from '../admin.js';
import path from 'node:path';
import { HttpError } from '../admin.js';
import type { FeedbackSentResponse, FeedbackUnmatchedResponse } from '../contract/admin-api.js';
import type { IdentityResolver } from '../identity/resolver.js';
import type { SentLookup } from './decide.js';
import { PeerLookup, peerLookupMetrics } from './peer-lookup.js';
import { messageKey } from './sent-entry.js';
import { SentIndex, SentIndexMetrics } from './sent-index.js';
import { besideMail, type SpaceAccountant } from '../spool/space.js';
import type { RelayConfig } from '../config.js';
import { DISCARD_EVENTS, type EventSink } from '../events/sink.js';
import type { TenantRuntime } from '../tenant-runtime.js';
import { FeedbackListener } from './listener.js';
import { FeedbackMetrics, FeedbackProcessor } from './processor.js';
import { NO_COMPLAINT_GUARD, type ComplaintSink } from './complaints.js';

export interface Feedback {
  processor: FeedbackProcessor;
  listener: FeedbackListener;
  events: EventSink;
  complaints: ComplaintSink;
  /** The sent-message index: accept.ts records the messages of tenants with a feedback address. */
  sent: SentIndex;
}

/** What a lookup found, for decide(): this relay's index first, then the fleet's. Never throws. */
async function findSent(idx: SentIndex, peers: PeerLookup, key: string, tenant: string): Promise<SentLookup> {
  try {
    const local = await idx.lookup(key, tenant);
    const hit = (e: {
      tenant: string;
      queueId: string;
      recipients: string[];
      count: number;
    }): SentLookup => ({
      found: true,
      tenant: e.tenant,
      queueId: e.queueId,
      recipients: e.recipients,
      count: e.count,
    });
    if (local.result === 'hit' && local.entry.tenant === tenant) return hit(local.entry);
    const fleet = await peers.find(key, tenant);
    if (fleet.result === 'hit' && fleet.entry.tenant === tenant) return hit(fleet.entry);
    if (local.result === 'hit') return hit(local.entry);
    if (fleet.result === 'hit') return hit(fleet.entry);
    const notes = [
      ...(local.result !== 'miss' ? [`the local index answered ${local.result}`] : []),
      ...(fleet.result === 'miss' && fleet.failed
        ? [`${fleet.failed} of ${fleet.asked} relays did not answer`]
        : []),
      ...(fleet.result === 'error' ? [fleet.error] : []),
    ];
    return {
      found: false,
      reason: `no sent message with this Message-ID${notes.length ? ` (${notes.join('; ')})` : ''}`,
    };
  } catch (e) {
    return { found: false, reason: `the sent-message lookup failed: ${(e as Error).message}` };
  }
}

export function setUpFeedback(o: {
  cfg: () => RelayConfig;
  tenancy: () => TenantRuntime;
  admin: AdminServer;
  registry: Registry;
  log: Logger;
  now: () => number;
  /** The relay's resolver (dns.servers), for feedback.peerLookup.host. */
  resolver: () => IdentityResolver;
  /** The spool's free-space accounting: the index never takes the room mail needs. */
  space?: SpaceAccountant;
}): Feedback {
  const metrics = new FeedbackMetrics(o.registry);
  const f = { events: DISCARD_EVENTS, complaints: NO_COMPLAINT_GUARD } as Feedback;
  const sent = (f.sent = new SentIndex({
    dir: path.join(o.cfg().spoolDir, 'feedback', 'sent'),
    ttlDays: () => o.cfg().feedback.tokenTtlDays,
    metrics: new SentIndexMetrics(o.registry),
    log: o.log,
    now: o.now,
    ...(o.space ? { space: besideMail(o.space) } : {}),
  }));
  const peers = new PeerLookup({
    cfg: o.cfg,
    resolver: o.resolver,
    metrics: peerLookupMetrics(o.registry),
    log: o.log,
  });
  f.processor = new FeedbackProcessor({
    cfg: o.cfg,
    tenancy: o.tenancy,
    events: () => f.events,
    complaints: () => f.complaints,
    metrics,
    log: o.log,
    now: o.now,
    sent: (key, tenant) => findSent(sent, peers, key, tenant),
  });
  f.listener = new FeedbackListener({ cfg: o.cfg, processor: f.processor, metrics, log: o.log, now: o.now });
  o.admin.route('GET', '/feedback/unmatched', (r) => {
    const raw = r.query.get('limit') ?? String(UNMATCHED_PAGE);
    const limit = Number(raw);
    if (!/^[0-9]{1,4}$/.test(raw) || limit < 1 || limit > 1000)
      throw new HttpError(400, 'limit: a whole number from 1 to 1000');
    return [200, pageOfUnmatched(f.processor.list(), limit, UNMATCHED_ANSWER_BYTES)];
  });
  // this relay's own index only: a peer's question never fans out further
  o.admin.route('GET', '/feedback/sent', async (r) => {
    const key = messageKey(r.query.get('messageId') ?? undefined);
    if (!key) throw new HttpError(400, 'messageId: a Message-ID is required (at most 998 characters)');
    const found = await sent.lookup(key, r.query.get('tenant') ?? undefined);
    if (found.result === 'busy') throw new HttpError(503, 'too many sent-message lookups at once; retry');
    if (found.result === 'error') throw new Error(found.error);
    return [
      200,
      {
        match: found.result === 'hit' ? found.entry : null,
        ...(found.result === 'truncated' ? { truncated: true } : {}),
      } satisfies FeedbackSentResponse,
    ];
  });
  return f;
}

/** Reports in one GET /feedback/unmatched answer unless `?limit=` says otherwise (at most 1000). */
export const UNMATCHED_PAGE = 100;
/** The answer stops before this many bytes of JSON (each kept report is up to 64 KiB, escaped larger). */
export const UNMATCHED_ANSWER_BYTES = 8 * 1024 * 1024;

/** The newest `limit` reports that fit in `maxBytes` of JSON (at least one); `truncated` when some are left. */
export function pageOfUnmatched(
  reports: FeedbackUnmatchedResponse['reports'],
  limit: number,
  maxBytes: number,
): FeedbackUnmatchedResponse {
  const out: FeedbackUnmatchedResponse['reports'] = [];
  let bytes = 0;
  for (const rep of reports) {
    if (out.length >= limit) break;
    const size = Buffer.byteLength(JSON.stringify(rep));
    if (out.length > 0 && bytes + size > maxBytes) break;
    out.push(rep);
    bytes += size;
  }
  return { reports: out, ...(out.length < reports.length ? { truncated: true } : {}) };
}
