/**
 * Drain: a message's pending recipients go to a peer relay in one transaction, with the metadata the peer
 * needs to carry on where we left off in an X-Cartero-Handoff header in front of the body (streamed).
 */
import { Readable } from 'node:stream';
import type { DeliveryState, Envelope } from '../spool/types.js';
import { OutboundSession, HopError, type Hop, type TxResult } from '../outbound.js';
import type { Destination } from './sessions.js';
import { classify, resultOf, type Cause } from './classify.js';
import { discard, type JobContext } from './transport.js';
import { HANDOFF_HEADER, type HandoffMeta, type Job, type Outcome } from './types.js';
import { deliveredSize } from '../dkim/stored.js';
import { parseEventsHeader } from '../events/handoff-wire.js';

/** The metadata a peer needs to carry on where we left off; only peers may send it (inbound checks AUTH). */
export function handoffHeader(env: Envelope, state: DeliveryState, rcpts: number[]): Buffer {
  const meta: HandoffMeta = {
    v: 1,
    tenant: env.tenant,
    arrivedAt: env.arrivedAt,
    origin: env.origin,
    dsn: env.dsn,
    delayWarned: state.delayWarned,
    attempts: state.attempts,
    rcpts: rcpts.map((i) => ({
      ...env.rcpts[i],
      attempts: state.rcpts[i].attempts,
      lastReply: state.rcpts[i].lastReply,
    })),
    from: env.id,
  };
  return Buffer.from(`${HANDOFF_HEADER}: ${Buffer.from(JSON.stringify(meta)).toString('base64url')}\r\n`);
}

/** The header followed by the body: one Buffer when the body is in memory, else a stream. */
async function withHeader(head: Buffer, body: Buffer | Readable): Promise<Buffer | Readable> {
  if (Buffer.isBuffer(body)) return Buffer.concat([head, body]);
  return Readable.from(
    (async function* () {
      yield head;
      for await (const c of body) yield c as Buffer;
    })(),
    { objectMode: false },
  );
}

export async function runHandoff(ctx: JobContext, dest: Destination, job: Job, peers: Hop[]): Promise<void> {
  const { d } = ctx;
  const { msg, rcpts } = job;
  const env = msg.env;
  const out = new Map<number, Outcome>();
  const retryAt = d.now() + 5000;
  /** Whatever a peer answers, the recipients stay ours until one takes them (the classifier defers them). */
  const decided = (cause: Cause, reply: string, remoteMta?: string): Outcome => {
    const c = classify({ ...cause, peer: true });
    return {
      result: resultOf(c.decision),
      status: c.status,
      reply,
      ...(remoteMta ? { remoteMta } : {}),
      route: 'handoff',
      ...(c.decision === 'deliver' ? {} : { retryAt }),
    };
  };
  /** Why no peer took the recipients, as the classifier takes it. */
  const failure = (e: unknown): { cause: Cause; text: string } =>
    e instanceof HopError
      ? { cause: e.replyInfo, text: e.reply }
      : { cause: { localError: true }, text: (e as Error).message };
  let body: Buffer | Readable | undefined;
  try {
    const head = handoffHeader(env, msg.state, rcpts);
    const openBody = ctx.bodyOf(job);
    let last: { cause: Cause; text: string } = {
      cause: { errCode: 'ECONNECTION', connected: false },
      text: 'no peer relay given',
    };
    for (const hop of peers) {
      let session: OutboundSession;
      try {
        session =
          dest.takeIdle(d.cfg.delivery, undefined) ??
          (await OutboundSession.open(hop, {
            ehloName: d.cfg.hostname,
            connectTimeoutMs: d.cfg.delivery.connectTimeoutMs,
            commandTimeoutMs: d.cfg.delivery.commandTimeoutMs,
          }));
      } catch (e) {
        last = failure(e);
        continue;
      }
      let tx: TxResult;
      try {
        discard(body);
        body = await withHeader(head, await openBody());
        tx = await session.send(
          {
            from: env.from,
            to: rcpts.map((i) => env.rcpts[i].address),
            size: head.length + deliveredSize(env),
            eightBit: env.eightBit,
          },
          body,
        );
      } catch (e) {
        last = failure(e);
        continue;
      }
      dest.release(d.cfg.delivery, session, ctx.running());
      // nodemailer reports a recipient accepted only on a 2xx to the end of DATA
      tx.rcpts.forEach((r, k) =>
        out.set(
          rcpts[k],
          decided(
            r.ok
              ? { stage: 'data', code: 250, message: r.reply }
              : { stage: 'rcpt', code: r.code, message: r.reply },
            r.reply,
            hop.name,
          ),
        ),
      );
      return;
    }
    for (const i of rcpts) out.set(i, decided(last.cause, `hand-off failed: ${last.text}`));
  } catch (e) {
    for (const i of rcpts)
      out.set(i, decided({ localError: true }, `hand-off failed: ${(e as Error).message}`));
  } finally {
    discard(body);
    job.resolve(out);
  }
}

/**
 * Finds and removes every X-Cartero-Handoff and X-Cartero-Events field in the header section; returns
 * the decoded metadata of the first valid one of each (believed only from a peer: the caller decides).
 * Cheap when absent (one search in the header section).
 */
export function takeHandoffHeader(raw: Buffer): {
  raw: Buffer;
  meta?: HandoffMeta;
  events?: { count: number };
} {
  let end = raw.indexOf('\r\n\r\n');
  if (end < 0) end = raw.length;
  const head = raw.subarray(0, end).toString('latin1');
  if (!/(^|\n)x-cartero-(handoff|events):/i.test(head)) return { raw };
  let meta: HandoffMeta | undefined;
  let events: { count: number } | undefined;
  const lines = head.split('\r\n');
  const kept: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const field = /^x-cartero-(handoff|events):/i.exec(lines[i]);
    if (field) {
      let value = lines[i].slice(lines[i].indexOf(':') + 1);
      while (i + 1 < lines.length && /^[ \t]/.test(lines[i + 1])) value += lines[++i].trim();
      if (field[1].toLowerCase() === 'events') events ??= parseEventsHeader(value);
      else if (!meta) {
        try {
          const m = JSON.parse(Buffer.from(value.trim(), 'base64url').toString('utf8')) as HandoffMeta;
          if (m && m.v === 1 && typeof m.tenant === 'string' && Array.isArray(m.rcpts)) meta = m;
        } catch {
          /* not ours: dropped */
        }
      }
      continue;
    }
    kept.push(lines[i]);
  }
  const rest = raw.subarray(end);
  return {
    raw: kept.length ? Buffer.concat([Buffer.from(kept.join('\r\n'), 'latin1'), rest]) : rest.subarray(2),
    ...(meta ? { meta } : {}),
    ...(events ? { events } : {}),
  };
}
