/**
 * The inbound bounce and feedback listener (docs/adr/016-feedback-loop.md): SMTP without AUTH, for the
 * bounce domains (`<prefix>+<token>@<domain>`, the token checked at RCPT) and the tenants' feedback
 * addresses only; everything else is refused with 550 5.7.1 (this is not a relay path). A message is read
 * into memory up to feedback.listener.maxMessageSize, parsed and fed (processor.ts), then acknowledged (451
 * when what it changes could not be written: the sender tries again): it is never queued or forwarded,
 * and never bounced (no backscatter). A connection is closed at
 * feedback.listener.timeout after it opened, whatever it is doing.
 */
import { SMTPServer, type SMTPServerOptions, type SMTPServerDataStream } from 'smtp-server';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { RelayConfig } from '../config.js';
import { judgeRcpt, type Target } from './decide.js';
import type { FeedbackMetrics, FeedbackProcessor } from './processor.js';

/** Recipients taken per transaction: a report concerns one message. */
export const MAX_RCPTS = 10;
/**
 * Refused recipients per connection before it is closed (421): a client trying addresses or tokens one
 * after the other (Postfix's smtpd_hard_error_limit is 20 as well).
 */
export const MAX_REFUSED = 20;
/** Idle time between commands before the connection is closed. */
const IDLE_MS = 60_000;

const smtpError = (code: number, text: string) => Object.assign(new Error(text), { responseCode: code });

interface Conn {
  id: string;
  close(): void;
}

export interface FeedbackListenerDeps {
  cfg: () => RelayConfig;
  processor: FeedbackProcessor;
  metrics: FeedbackMetrics;
  log: Logger;
  now: () => number;
}

export class FeedbackListener {
  private server?: SMTPServer;
  private readonly timers = new Map<string, NodeJS.Timeout>();
  port = 0;

  constructor(private readonly d: FeedbackListenerDeps) {}

  async start(): Promise<number> {
    const cfg = this.d.cfg();
    const l = cfg.feedback.listener;
    if (!l) return 0;
    const server = (this.server = new SMTPServer(this.options(cfg, l)));
    server.on('error', (e) =>
      this.d.log.warn({ event: 'feedback.listener.error', err: e.message }, 'feedback listener error'),
    );
    await new Promise<void>((resolve, reject) => {
      const srv = (server as unknown as { server: import('node:net').Server }).server;
      srv.once('error', reject);
      server.listen(l.port, l.address, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    this.port = (
      (server as unknown as { server: import('node:net').Server }).server.address() as AddressInfo
    ).port;
    this.d.log.info(
      { event: 'feedback.listening', address: l.address, port: this.port },
      'feedback listener ready (bounces and complaints)',
    );
    return this.port;
  }

  private options(cfg: RelayConfig, l: NonNullable<RelayConfig['feedback']['listener']>): SMTPServerOptions {
    const tls = cfg.tls;
    return {
      name: cfg.hostname,
      banner: 'Cartero feedback',
      secure: false,
      ...(tls ? { key: tls.key, cert: tls.cert, minVersion: 'TLSv1.2' } : {}),
      disabledCommands: ['AUTH', ...(tls ? [] : ['STARTTLS'])],
      authOptional: true,
      size: l.maxMessageSize,
      hideSize: false,
      hideENHANCEDSTATUSCODES: true, // the replies carry their own enhanced codes
      maxClients: l.maxConnections,
      socketTimeout: Math.min(IDLE_MS, l.timeoutMs),
      closeTimeout: 1000,
      disableReverseLookup: true,
      logger: false,
      onConnect: (session, cb) => {
        // the whole connection is bounded in time: a slow sender is cut off
        const t = setTimeout(() => this.cut(session.id), l.timeoutMs);
        t.unref();
        this.timers.set(session.id, t);
        cb();
      },
      onClose: (session) => {
        clearTimeout(this.timers.get(session.id));
        this.timers.delete(session.id);
      },
      onMailFrom: (_address, _session, cb) => cb(),
      onRcptTo: (address, session, cb) => {
        if (session.envelope.rcptTo.length >= MAX_RCPTS)
          return cb(smtpError(452, '4.5.3 Too many recipients for one report'));
        const v = judgeRcpt(this.d.cfg(), address.address, this.d.now());
        if (!v.ok) {
          const tries = session as typeof session & { refusedRcpts?: number };
          tries.refusedRcpts = (tries.refusedRcpts ?? 0) + 1;
          this.d.metrics.refused.inc({ reason: v.reason });
          if (tries.refusedRcpts > MAX_REFUSED) {
            this.d.metrics.refused.inc({ reason: 'limit' });
            return cb(smtpError(421, '4.7.0 Too many refused recipients; closing the connection'));
          }
          this.d.log.info(
            {
              event: 'feedback.refused',
              rcpt: address.address.slice(0, 320),
              reason: v.reason,
              client: session.remoteAddress,
            },
            'feedback listener refused a recipient',
          );
          return cb(
            smtpError(
              550,
              '5.7.1 Not a relay path: this host takes bounces and feedback for its own addresses only',
            ),
          );
        }
        cb();
      },
      onData: (stream, session, cb) =>
        this.onData(
          stream,
          session.envelope.rcptTo.map((r) => r.address),
          cb,
        ),
    } as SMTPServerOptions;
  }

  private onData(
    stream: SMTPServerDataStream,
    rcpts: string[],
    cb: (err?: Error | null, msg?: string) => void,
  ): void {
    const max = this.d.cfg().feedback.listener?.maxMessageSize ?? 0;
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= max) chunks.push(c);
    });
    stream.on('error', (e) => cb(e));
    stream.on('end', () => {
      if (stream.sizeExceeded || size > max)
        return cb(smtpError(552, `5.3.4 Report too big (at most ${max} bytes)`));
      const raw = Buffer.concat(chunks);
      const now = this.d.now();
      const targets: { address: string; target: Target }[] = [];
      for (const a of rcpts) {
        const v = judgeRcpt(this.d.cfg(), a, now);
        if (v.ok) targets.push({ address: a, target: v.target });
      }
      this.d.processor.handle(targets, raw).then(
        () => cb(null, '2.6.0 Report received'),
        (e: Error) => cb(smtpError(451, `4.3.0 Could not read the report: ${e.message}`)),
      );
    });
  }

  private cut(id: string): void {
    const conns = (this.server as unknown as { connections: Set<Conn> } | undefined)?.connections;
    for (const c of conns ?? []) if (c.id === id) c.close();
  }

  async stop(): Promise<void> {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
