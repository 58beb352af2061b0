/**
 * How a stored signature reaches the next hop: the DKIM-Signature fields kept in the envelope (`dkim`) go in
 * front of the stored message each time it is sent, and count in the SIZE declared.
 */
import { Readable } from 'node:stream';
import type { Envelope } from '../spool/types.js';

/** Bytes sent for this message: the stored message and its signatures. */
export function deliveredSize(env: Envelope): number {
  return env.size + (env.dkim ? Buffer.byteLength(env.dkim, 'latin1') : 0);
}

/** `head` followed by `body`: one Buffer when the body is in memory, else a stream (read once). */
export function prepend(head: Buffer | undefined, body: Buffer | Readable): Buffer | Readable {
  if (!head?.length) return body;
  if (Buffer.isBuffer(body)) return Buffer.concat([head, body]);
  const out = Readable.from(
    (async function* () {
      yield head;
      for await (const c of body) yield c as Buffer;
    })(),
    { objectMode: false },
  );
  // a transaction that gives up destroys what it was handed: the file stream under it must close too
  out.once('close', () => body.destroy());
  return out;
}

/** The body of `env`'s message as it is sent: its signatures, then the stored bytes. */
export async function withSignatures(
  env: Envelope,
  body: Promise<Buffer | Readable>,
): Promise<Buffer | Readable> {
  return prepend(env.dkim ? Buffer.from(env.dkim, 'latin1') : undefined, await body);
}
