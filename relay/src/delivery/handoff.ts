/**
 * Drain: a message's pending recipients go to a peer relay in one transaction, with the metadata the peer
 * needs to carry on where we left off in an X-Cartero-Handoff header in front of the body (streamed).
 */
import { Readable } from 'node:stream';
import type { DeliveryState, Envelope } from '../spool/types.js';
import { OutboundSession, HopError, type Hop, type TxResult } from '../outbound.js';
import type { Destination } from './sessions.js';
import { discard, type JobContext } from './transport.js';
import { HANDOFF_HEADER, type HandoffMeta, type Job, type Outcome } from './types.js';

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
  let body: Buffer | Readable | undefined;
  try {
    const head = handoffHeader(env, msg.state, rcpts);
    const openBody = ctx.bodyOf(job);
    let last = 'no peer relay given';
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
        last = e instanceof HopError ? e.reply : (e as Error).message;
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
            size: head.length + env.size,
            eightBit: env.eightBit,
          },
          body,
        );
      } catch (e) {
        last = e instanceof HopError ? e.reply : (e as Error).message;
        continue;
      }
      dest.release(d.cfg.delivery, session, ctx.running());
      tx.rcpts.forEach((r, k) =>
        out.set(
          rcpts[k],
          r.ok
            ? { result: 'delivered', status: '2.0.0', reply: r.reply, remoteMta: hop.name, route: 'handoff' }
            : {
                result: 'deferred',
                status: '4.0.0',
                reply: r.reply,
                remoteMta: hop.name,
                route: 'handoff',
                retryAt,
              },
        ),
      );
      return;
    }
    for (const i of rcpts)
      out.set(i, {
        result: 'deferred',
        status: '4.4.1',
        reply: `hand-off failed: ${last}`,
        route: 'handoff',
        retryAt,
      });
  } catch (e) {
    for (const i of rcpts)
      out.set(i, {
        result: 'deferred',
        status: '4.3.0',
        reply: `hand-off failed: ${(e as Error).message}`,
        route: 'handoff',
        retryAt,
      });
  } finally {
    discard(body);
    job.resolve(out);
  }
}
