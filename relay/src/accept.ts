/**
 * Accepting a message at the end of DATA: stream it into the spool (receive.ts), build its envelope,
 * commit it durably and queue it; the client hears `250 … queued as <id>` only after that. Messages
 * handed off by a peer relay keep their tenant, arrival time and attempts.
 */
import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { Logger } from 'pino';
import { finished } from 'node:stream/promises';
import type { ListenerConfig, RelayConfig } from './config.js';
import { DEFAULT_TENANT } from './config.js';
import { Spool, newQueueId, initialState, type Envelope, type Reservation } from './spool/disk.js';
import { receiveInto, type Received } from './receive.js';
import type { DeliveryEngine } from './delivery/engine.js';
import type { RelayMetrics } from './metrics.js';
import { reply, SmtpReplyError } from './errors.js';
import { countReceived } from './policy.js';
import type { TenantRuntime } from './tenant-runtime.js';
import type { HandoffMeta } from './delivery/types.js';
import { takeHandoffHeader } from './delivery/handoff.js';
import type { GuardedSession } from './abuse/smtp-guard.js';
import { MessageSigner, planSigning, refusalText, type UnsignedReason } from './dkim/signer.js';
import type { LintRuntime, MessageLint } from './lint/runtime.js';
import type { EventHandoffReceiver, EventSink } from './events/sink.js';
import { EventsBody, RECEIVE_MAX_BYTES, STORED_TEXT } from './events/handoff-wire.js';
import { messageIdOf } from './events/message-id.js';
import { rejectedEvents, acceptedEvents } from './events/smtp-events.js';
import type { SentIndex } from './feedback/sent-index.js';

export interface AcceptDeps {
  cfg: RelayConfig;
  spool: Spool;
  engine: DeliveryEngine;
  tenancy: TenantRuntime;
  metrics: RelayMetrics;
  log: Logger;
  now: () => number;
  /** The bulk-sender lint (lint/runtime.ts); absent: messages are not linted. */
  lint?: LintRuntime;
  /** Delivery events (relay/src/events/); absent: none. A peer's events are stored through it (ADR 019). */
  events?: EventSink & Partial<EventHandoffReceiver>;
  /** The sent-message index (feedback/sent-index.ts, ADR 020); absent: nothing is recorded. */
  sent?: Pick<SentIndex, 'record'>;
}

/** Records `env` in the sent-message index when its tenant takes feedback-loop reports without a token. */
function recordSent(d: AcceptDeps, env: Envelope): void {
  if (!env.messageId || !d.sent || !d.cfg.tenants.get(env.tenant)?.feedbackAddress) return;
  d.sent.record({
    messageId: env.messageId,
    tenant: env.tenant,
    queueId: env.id,
    recipients: env.rcpts.map((r) => r.address),
  });
}

export type InboundSession = SMTPServerSession &
  GuardedSession & {
    user?: string;
    tenant?: string;
    carteroListener?: string;
    peer?: boolean;
    /** Disk space held for the transaction in progress (from MAIL to the end of DATA). */
    reservation?: Reservation;
    /** The connection is gone: a reservation that arrives now is released at once. */
    closed?: boolean;
  };

/** Room for what we add to a message: the Received line, the envelope and the trailer. */
export const OVERHEAD = 16 * 1024;

function rfc5322Date(d: Date): string {
  // e.g. "Sun, 29 Nov 2026 10:00:00 +0000"
  return d.toUTCString().replace(/GMT$/, '+0000');
}

/**
 * Streams the message into the spool and queues it; resolves with the text of the 250 (its queue id) once
 * it is durable. From a peer, a message with the X-Cartero-Events field is not mail: its delivery events
 * are stored in the outbox instead (storeEvents).
 */
export async function acceptMessage(
  d: AcceptDeps,
  l: ListenerConfig,
  stream: SMTPServerDataStream,
  session: InboundSession,
): Promise<string> {
  const cfg = d.cfg;
  const max = cfg.limits.maxMessageSize;
  let reservation = session.reservation;
  session.reservation = undefined;
  if (!reservation) {
    try {
      reservation = await d.spool.reserve(max + OVERHEAD);
    } catch (e) {
      stream.resume(); // the dialogue needs DATA read to its end (or the client gone)
      await finished(stream).catch(() => undefined);
      throw e;
    }
  }
  const now = d.now();
  const id = newQueueId(now);
  const user = typeof session.user === 'string' ? session.user : undefined;
  const rcpts = session.envelope.rcptTo;
  const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
  const helo = (session.hostNameAppearsAs || 'unknown').replace(/[^\x21-\x7e]/g, '?');
  let meta: HandoffMeta | undefined;
  let events: EventsBody | undefined;
  const tenant = session.tenant ?? DEFAULT_TENANT;
  let dkim: DkimOutcome | undefined;
  let messageId: string | undefined;
  // the lint's SPF check runs while the body streams in; a peer's hand-off was linted where it arrived
  const lint: MessageLint | undefined = session.peer ? undefined : d.lint?.begin(cfg, tenant, from);
  const r = await receiveInto(stream, d.spool, id, reservation, max, {
    headerLimits: cfg.limits,
    body: (chunk) => {
      events?.push(chunk);
      dkim?.signer?.update(chunk);
    },
    head: (head) => {
      const hops = countReceived(head);
      if (hops >= cfg.limits.maxReceivedHeaders) throw reply.looped(hops);
      // The hand-off header is believed only from an authenticated peer, and stripped from anyone's mail.
      const taken = takeHandoffHeader(head);
      meta = taken.meta;
      // a peer's delivery events (ADR 019): held in memory (bounded), the spool copy is discarded
      if (session.peer && taken.events)
        events = new EventsBody(taken.events.count, Math.min(max, RECEIVE_MAX_BYTES));
      messageId = messageIdOf(taken.raw);
      // a peer hands on mail a relay of the fleet accepted (and signed) already: never signed twice
      if (session.peer) return taken.raw;
      dkim = startSigning(d, tenant, id, taken.raw);
      lint?.head(taken.raw, dkim?.domain ? [dkim.domain] : []);
      const received = Buffer.from(
        `Received: from ${helo} ([${session.remoteAddress}])\r\n\tby ${cfg.hostname} (Cartero) with ${session.transmissionType || 'ESMTP'} id ${id}` +
          (rcpts.length === 1 ? `\r\n\tfor <${rcpts[0].address}>` : '') +
          `; ${rfc5322Date(new Date(now))}\r\n`,
      );
      return Buffer.concat([received, taken.raw]);
    },
  });
  try {
    if (events) return await storeEvents(d, l, events, session);
    if (session.peer)
      return `2.0.0 Ok: queued as ${await acceptHandoff(d, l, r, session, meta, id, now, messageId)}`;
    const addresses = rcpts.map((rc) => rc.address);
    try {
      await lint?.enforce(id); // 550 under lint.policy enforce
      const overQuota = d.tenancy.checkQuota(tenant, d.engine.tenantUsage(tenant), r.size);
      if (overQuota) throw overQuota;
    } catch (e) {
      for (const ev of rejectedEvents(tenant, addresses, e, messageId, d.now())) d.events?.emit(ev);
      throw e;
    }
    const envDsn = (session.envelope as { dsn?: { ret?: string; envid?: string } }).dsn ?? {};
    const env: Envelope = {
      v: 1,
      id,
      tenant,
      pool: d.tenancy.poolOf(tenant) ?? null,
      arrivedAt: now,
      from,
      rcpts: rcpts.map((rc) => {
        const dsn = (rc as { dsn?: { notify?: string[]; orcpt?: string } }).dsn;
        return {
          address: rc.address,
          ...(dsn?.notify ? { notify: dsn.notify } : {}),
          ...(dsn?.orcpt ? { orcpt: dsn.orcpt } : {}),
        };
      }),
      dsn: {
        ...(envDsn.ret === 'FULL' || envDsn.ret === 'HDRS' ? { ret: envDsn.ret } : {}),
        ...(envDsn.envid ? { envid: envDsn.envid } : {}),
      },
      size: r.size,
      eightBit: r.eightBit,
      smtpUtf8: /[\u0080-\uffff]/.test(from + rcpts.map((rc) => rc.address).join('')),
      origin: 'smtp',
      client: { address: session.remoteAddress, helo, ...(user ? { user } : {}), listener: l.name },
    };
    if (dkim?.signer) env.dkim = dkim.signer.finish(now);
    if (messageId) env.messageId = messageId;
    const { bodyOffset, crc32 } = await r.writer.commit(env);
    for (const ev of acceptedEvents(env, d.now())) d.events?.emit(ev);
    recordSent(d, env);
    d.metrics.received.inc({ tenant });
    lint?.accepted(id);
    if (dkim?.signer) for (const a of dkim.algorithms) d.metrics.dkimSigned.inc({ tenant, algorithm: a });
    else d.metrics.dkimUnsigned.inc({ tenant, reason: dkim?.unsigned ?? 'no-keys' });
    d.log.info(
      {
        event: 'received',
        queueId: id,
        tenant,
        from,
        rcpts: rcpts.length,
        size: env.size,
        client: session.remoteAddress,
        user,
        listener: l.name,
        ...(dkim?.signer ? { dkim: dkim.selectors } : dkim?.unsigned ? { unsigned: dkim.unsigned } : {}),
        ...(lint?.headerRules.length ? { lint: lint.headerRules } : {}),
      },
      'queued',
    );
    d.engine.add({ env, state: initialState(env, now), bodyOffset, crc32 }, r.body);
    return `2.0.0 Ok: queued as ${id}`;
  } finally {
    await r.writer.abort(); // no-op once committed
  }
}

/** What DKIM makes of one message: a signer fed the body, or why it is sent unsigned. */
interface DkimOutcome {
  signer?: MessageSigner;
  algorithms: string[];
  /** `d=/s=` of each signature, for the log line. */
  selectors: string[];
  /** The signing domain (d=) chosen for the From domain, when the message is signed (the lint's alignment). */
  domain?: string;
  unsigned?: UnsignedReason;
}

/**
 * Plans the signing of a message of `tenant` from its header section; throws the 550 when the tenant
 * refuses mail it cannot sign (counted and logged here: the client hears it at the end of DATA).
 */
function startSigning(d: AcceptDeps, tenant: string, id: string, head: Buffer): DkimOutcome | undefined {
  const cfg = d.cfg.tenants.get(tenant)?.dkim;
  if (!cfg) return undefined;
  const plan = planSigning(cfg, head);
  if ('sign' in plan)
    return {
      signer: new MessageSigner(plan.sign, plan.fields, cfg.expiryMs),
      algorithms: plan.sign.map((k) => k.algorithm),
      selectors: plan.sign.map((k) => `${k.domain}/${k.selector}`),
      domain: plan.sign[0].domain,
    };
  if (cfg.unmatched === 'refuse') {
    const why = refusalText(plan.unsigned, plan.domain);
    d.metrics.dkimRefused.inc({ tenant, reason: plan.unsigned });
    d.log.info(
      { event: 'dkim.refused', queueId: id, tenant, reason: plan.unsigned, fromDomain: plan.domain },
      why,
    );
    throw reply.unsigned(why);
  }
  return { algorithms: [], selectors: [], unsigned: plan.unsigned };
}

/** A message handed off by a peer relay: keeps its tenant, arrival time, attempts and DSN parameters. */
async function acceptHandoff(
  d: AcceptDeps,
  l: ListenerConfig,
  r: Received,
  session: InboundSession,
  meta: HandoffMeta | undefined,
  id: string,
  now: number,
  messageId: string | undefined,
): Promise<string> {
  const rcpts = session.envelope.rcptTo.map((r) => r.address);
  const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
  const byAddr = new Map((meta?.rcpts ?? []).map((r) => [r.address.toLowerCase(), r]));
  const env: Envelope = {
    v: 1,
    id,
    tenant: meta?.tenant && d.cfg.tenants.has(meta.tenant) ? meta.tenant : (meta?.tenant ?? DEFAULT_TENANT),
    pool: meta ? (d.tenancy.poolOf(meta.tenant) ?? null) : null,
    arrivedAt: meta?.arrivedAt ?? now,
    from,
    rcpts: rcpts.map((a) => {
      const m = byAddr.get(a.toLowerCase());
      return {
        address: a,
        ...(m?.notify ? { notify: m.notify } : {}),
        ...(m?.orcpt ? { orcpt: m.orcpt } : {}),
      };
    }),
    dsn: meta?.dsn ?? {},
    size: r.size,
    eightBit: r.eightBit,
    smtpUtf8: /[\u0080-\uffff]/.test(from + rcpts.join('')),
    origin: meta?.origin ?? 'smtp',
    client: {
      address: session.remoteAddress,
      helo: (session.hostNameAppearsAs || 'unknown').replace(/[^\x21-\x7e]/g, '?'),
      user: typeof session.user === 'string' ? session.user : undefined,
      listener: l.name,
    },
  };
  // the relay that accepted it first reported `accepted`; this one reports what happens next
  if (messageId) env.messageId = messageId;
  const state = initialState(env, now);
  state.attempts = meta?.attempts ?? 0;
  state.delayWarned = meta?.delayWarned ?? false;
  env.rcpts.forEach((r, i) => {
    const m = byAddr.get(r.address.toLowerCase());
    if (m) {
      state.rcpts[i].attempts = m.attempts;
      if (m.lastReply) state.rcpts[i].lastReply = m.lastReply;
    }
  });
  const { bodyOffset, crc32 } = await r.writer.commit(env);
  recordSent(d, env); // the relay it came from may be scaled away with its index
  if (state.attempts > 0) {
    try {
      await d.spool.saveState(id, state);
    } catch (e) {
      // the peer hears 451 and sends it again: this copy must not stay behind to be delivered too
      await d.spool.remove(id, env.size).catch(() => undefined);
      throw e;
    }
  }
  d.log.info(
    {
      event: 'received',
      queueId: id,
      tenant: env.tenant,
      from,
      rcpts: rcpts.length,
      size: env.size,
      client: session.remoteAddress,
      handoffFrom: meta?.from,
      listener: l.name,
    },
    'queued (handed off by a peer)',
  );
  d.engine.add({ env, state, bodyOffset, crc32 }, r.body);
  return id;
}

/**
 * Delivery events handed off by a draining peer (ADR 019): every line must pass its CRC and the count must
 * match, else 451 and the peer sends the chunk again; stored durably (fdatasync) before the 250.
 */
async function storeEvents(
  d: AcceptDeps,
  l: ListenerConfig,
  body: EventsBody,
  session: InboundSession,
): Promise<string> {
  const got = body.decode();
  const refuse = (why: string) => {
    d.log.warn(
      { event: 'events.handoff-refused', client: session.remoteAddress, listener: l.name, reason: why },
      'delivery events from a peer refused',
    );
    return new SmtpReplyError('ERR_EVENTS', 451, '4.6.0', `Delivery events refused: ${why}; send them again`);
  };
  if ('error' in got) throw refuse(got.error);
  if (!d.events?.receiveHandoff) throw refuse('this relay does not store delivery events');
  let kept: number;
  try {
    kept = await d.events.receiveHandoff(got.events);
  } catch (e) {
    throw refuse(`not stored (${(e as Error).message})`);
  }
  d.log.info(
    {
      event: 'events.received',
      client: session.remoteAddress,
      listener: l.name,
      count: got.events.length,
      kept,
    },
    'delivery events handed off by a peer stored',
  );
  return `2.0.0 Ok: ${got.events.length} ${STORED_TEXT}, ${kept} kept`;
}
