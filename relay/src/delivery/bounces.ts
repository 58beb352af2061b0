/**
 * DSNs the engine generates go through our own spool like any message. The returned content is read with
 * readHead, never the whole body: at most 64 KiB, and only the header section when the message is longer,
 * so rendering a DSN never loads a 100 MB message.
 */
import { renderDsn, type DsnRecipient } from '../dsn.js';
import { initialState, newQueueId, type Envelope, type SpooledMessage } from '../spool/types.js';
import type { ActiveMessage, EngineDeps } from './types.js';

/** Most of the original a DSN carries. */
export const DSN_HEAD_BYTES = 64 * 1024;

/** The original as a DSN may return it: whole when short, else its header section (then `headersOnly`). */
export async function dsnOriginal(
  d: EngineDeps,
  m: ActiveMessage,
): Promise<{ original: Buffer; headersOnly: boolean }> {
  let head: Buffer;
  if (m.body) head = m.body.length <= DSN_HEAD_BYTES ? m.body : m.body.subarray(0, DSN_HEAD_BYTES);
  else {
    try {
      head = await d.spool.readHead(m, DSN_HEAD_BYTES);
    } catch {
      // the stored copy is unreadable (or damaged): the DSN goes without the original
      return { original: Buffer.alloc(0), headersOnly: true };
    }
  }
  if (m.env.size <= DSN_HEAD_BYTES && head.length === m.env.size)
    return { original: head, headersOnly: false };
  const end = head.indexOf('\r\n\r\n');
  const cut = end >= 0 ? end + 4 : head.lastIndexOf('\r\n') + 2;
  return { original: head.subarray(0, cut), headersOnly: true };
}

/**
 * Queues a DSN to the original sender through our own spool. Never to the null sender; never about a DSN.
 * Returns the DSN message to index (with its raw body), or undefined when none was due.
 */
export async function writeDsn(
  d: EngineDeps,
  m: ActiveMessage,
  recipients: DsnRecipient[],
  opts: { noOriginal?: boolean } = {},
): Promise<{ msg: SpooledMessage; raw: Buffer } | undefined> {
  const env = m.env;
  if (env.from === '' || env.origin === 'dsn') {
    d.log.info(
      {
        event: 'dsn.suppressed',
        queueId: env.id,
        reason: env.from === '' ? 'null sender' : 'message is a DSN',
      },
      'no DSN for this message',
    );
    return undefined;
  }
  const now = d.now();
  const { original, headersOnly } = opts.noOriginal
    ? { original: Buffer.alloc(0), headersOnly: true }
    : await dsnOriginal(d, m);
  const raw = renderDsn({
    reportingMta: d.cfg.hostname,
    queueId: env.id,
    arrivalDate: new Date(env.arrivedAt),
    envid: env.dsn.envid,
    ret: headersOnly ? 'HDRS' : env.dsn.ret,
    sender: env.from,
    recipients,
    original,
    now: new Date(now),
    messageIdDomain: d.cfg.hostname,
  });
  const id = newQueueId(now);
  const dsnEnv: Envelope = {
    v: 1,
    id,
    tenant: env.tenant,
    pool: env.pool,
    arrivedAt: now,
    from: '',
    rcpts: [{ address: env.from }],
    dsn: {},
    size: raw.length,
    eightBit: /[\x80-\xff]/.test(raw.toString('latin1')),
    smtpUtf8: /[\u0080-\uffff]/.test(env.from),
    origin: 'dsn',
    client: { address: '127.0.0.1', helo: d.cfg.hostname, listener: 'internal' },
  };
  const bodyOffset = await d.spool.write(dsnEnv, [raw], { internal: true });
  const action = recipients[0].action;
  d.metrics.dsnSent.inc({ action });
  d.log.info(
    { event: 'dsn.queued', queueId: id, about: env.id, to: env.from, action, recipients: recipients.length },
    'DSN queued',
  );
  return { msg: { env: dsnEnv, state: initialState(dsnEnv, now), bodyOffset }, raw };
}
