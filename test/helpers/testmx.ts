/**
 * A scriptable receiving MTA for tests, built on smtp-server. It records every accepted message and
 * picks its answer to each RCPT from the recipient's local part:
 *
 * | local part (lowercased, `+tag` dropped) | behaviour                                              |
 * | --------------------------------------- | ------------------------------------------------------ |
 * | `ok*`                                   | accept                                                 |
 * | `tempfail`                              | RCPT gets `451 4.3.0`                                  |
 * | `reject`                                | RCPT gets `550 5.1.1`                                  |
 * | `slow`                                  | accept, but the DATA reply comes `slowMs` late         |
 * | `tempfail-once`                         | first RCPT of that exact address gets 451, then accept |
 * | anything else                           | accept                                                 |
 *
 * `setMode('down-421')` makes every new connection and every MAIL get `421 4.3.2`.
 */
import type { AddressInfo } from 'node:net';
import {
  SMTPServer,
  type SMTPServerAddressArgs,
  type SMTPServerOptions,
  type SMTPServerSession,
} from 'smtp-server';
import { waitFor } from './poll.js';

export interface TestMxOptions {
  /** IP to bind (default 127.0.0.1); any 127.0.0.0/8 address works on Linux. */
  address?: string;
  /** Port to bind (default 0: a free one). Several MX hosts on different 127.x addresses can share one. */
  port?: number;
  /** When given, AUTH PLAIN/LOGIN is offered (also without TLS) and required. */
  auth?: { username: string; password: string };
  /** Advertise DSN so a client may pass NOTIFY/ORCPT/RET/ENVID. */
  dsn?: boolean;
  /** Server name in the banner and the EHLO reply (default mx.test). */
  name?: string;
  /** Delay of the DATA reply for `slow` recipients (default 1500 ms). */
  slowMs?: number;
  /** Offer STARTTLS with this key and certificate (PEM). Without it STARTTLS is not offered. */
  tls?: { key: string | Buffer; cert: string | Buffer };
  /** Advertise SIZE with this limit in bytes (a client may then refuse a larger message itself). */
  size?: number;
}

/** One message the test MX accepted. */
export interface ReceivedMessage {
  /** Envelope sender, '' for the null sender. */
  mailFrom: string;
  /** Accepted envelope recipients, in RCPT order. */
  rcptTo: string[];
  /** Exact bytes of the message, after SMTP dot-unstuffing, without the final `.` line. */
  raw: Buffer;
  /** MAIL FROM parameters (upper-case keys, xtext decoded; `true` for a bare keyword), e.g. RET, ENVID, SIZE, BODY. */
  mailParams: SMTPServerAddressArgs;
  /** RCPT TO parameters, one entry per `rcptTo` entry, e.g. NOTIFY, ORCPT. */
  rcptParams: SMTPServerAddressArgs[];
  /** The authenticated username, if the client logged in. */
  user?: string;
  /** HELO/EHLO name the client gave. */
  helo: string;
  /** Whether the session was TLS protected (STARTTLS). */
  secure: boolean;
  /** Client IP address. */
  remoteAddress: string;
  receivedAt: Date;
  /** The queue id given in the 250 reply to DATA. */
  id: string;
}

/** One RCPT command seen, with the reply code it got. */
export interface RcptAttempt {
  address: string;
  code: number;
  at: Date;
}

export type TestMxMode = 'normal' | 'down-421';

export interface TestMx {
  readonly port: number;
  readonly address: string;
  /** Every accepted message, in order of acceptance. */
  readonly messages: ReceivedMessage[];
  /** Every RCPT command seen (accepted or not), in order. */
  readonly rcptAttempts: RcptAttempt[];
  /** Number of TCP connections accepted so far. */
  readonly connections: number;
  setMode(mode: TestMxMode): void;
  /** Resolves with the messages once at least `n` were accepted (default timeout 10 s). */
  waitForMessages(n: number, timeoutMs?: number): Promise<ReceivedMessage[]>;
  /** Messages that had `addr` (case-insensitive) among their accepted recipients. */
  byRecipient(addr: string): ReceivedMessage[];
  /** Stops listening and drops open connections (within about a quarter second). */
  close(): Promise<void>;
}

type Behaviour = 'accept' | 'tempfail' | 'reject' | 'slow' | 'tempfail-once';

/** The behaviour a recipient address selects, from its local part. */
export function behaviourOf(address: string): Behaviour {
  const at = address.lastIndexOf('@');
  const local = (at >= 0 ? address.slice(0, at) : address).toLowerCase().replace(/\+.*$/, '');
  switch (local) {
    case 'tempfail':
    case 'reject':
    case 'slow':
    case 'tempfail-once':
      return local;
    default:
      return 'accept';
  }
}

/** An error whose message becomes the SMTP reply text, with `code` as the reply code. */
function smtpError(code: number, text: string): Error & { responseCode: number } {
  return Object.assign(new Error(text), { responseCode: code });
}

/** Starts a test MX on `address`, port 0 (a free port). */
export async function startTestMx(opts: TestMxOptions = {}): Promise<TestMx> {
  const address = opts.address ?? '127.0.0.1';
  const slowMs = opts.slowMs ?? 1500;
  const messages: ReceivedMessage[] = [];
  const rcptAttempts: RcptAttempt[] = [];
  const tempfailedOnce = new Set<string>();
  const timers = new Set<NodeJS.Timeout>();
  let mode: TestMxMode = 'normal';
  let connections = 0;
  let seq = 0;

  const disabledCommands: string[] = [];
  if (!opts.auth) disabledCommands.push('AUTH');
  if (!opts.tls) disabledCommands.push('STARTTLS');

  const down = () => smtpError(421, `4.3.2 ${opts.name ?? 'mx.test'} service not available, closing channel`);

  const options: SMTPServerOptions = {
    name: opts.name ?? 'mx.test',
    logger: false,
    disabledCommands,
    disableReverseLookup: true,
    hideDSN: !opts.dsn,
    allowInsecureAuth: true,
    authOptional: false,
    maxAllowedUnauthenticatedCommands: false,
    closeTimeout: 250,
    ...(opts.tls ? { key: opts.tls.key, cert: opts.tls.cert } : {}),
    ...(opts.size ? { size: opts.size } : {}),

    onConnect(_session, callback) {
      callback(mode === 'down-421' ? down() : null);
    },

    onAuth(auth, _session, callback) {
      const ok =
        opts.auth !== undefined &&
        (auth.method === 'PLAIN' || auth.method === 'LOGIN') &&
        auth.username === opts.auth.username &&
        auth.password === opts.auth.password;
      if (ok) callback(null, { user: auth.username });
      else callback(smtpError(535, '5.7.8 Authentication credentials invalid'));
    },

    onMailFrom(_address, _session, callback) {
      callback(mode === 'down-421' ? down() : null);
    },

    onRcptTo(rcpt, _session, callback) {
      const reply = (code: number, err: Error | null) => {
        rcptAttempts.push({ address: rcpt.address, code, at: new Date() });
        callback(err);
      };
      if (mode === 'down-421') return reply(421, down());
      const behaviour = behaviourOf(rcpt.address);
      const key = rcpt.address.toLowerCase();
      if (behaviour === 'tempfail' || (behaviour === 'tempfail-once' && !tempfailedOnce.has(key))) {
        tempfailedOnce.add(key);
        return reply(451, smtpError(451, '4.3.0 Temporary failure, try again later'));
      }
      if (behaviour === 'reject') return reply(550, smtpError(550, '5.1.1 No such user here'));
      reply(250, null);
    },

    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('error', (err) => callback(err));
      stream.on('end', () => {
        const env = session.envelope;
        const id = `TESTMX${String(++seq).padStart(6, '0')}`;
        const finish = () => {
          messages.push(toMessage(session, Buffer.concat(chunks), id));
          callback(null, `2.0.0 Ok: queued as ${id}`);
        };
        if (env.rcptTo.some((r) => behaviourOf(r.address) === 'slow')) {
          const t = setTimeout(() => {
            timers.delete(t);
            finish();
          }, slowMs);
          timers.add(t);
        } else {
          finish();
        }
      });
    },
  };

  const server = new SMTPServer(options);
  server.on('error', () => {
    /* client-side socket errors are expected in tests (resets, timeouts) */
  });
  server.server.on('connection', () => connections++);
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(opts.port ?? 0, address, () => {
      server.server.off('error', reject);
      resolve();
    });
  });
  const port = (server.server.address() as AddressInfo).port;

  return {
    port,
    address,
    messages,
    rcptAttempts,
    get connections() {
      return connections;
    },
    setMode(m) {
      mode = m;
    },
    async waitForMessages(n, timeoutMs = 10_000) {
      try {
        return await waitFor(() => messages.length >= n && messages.slice(), {
          timeoutMs,
          what: `${n} message(s) at the test MX on port ${port}`,
        });
      } catch (e) {
        throw new Error(`${(e as Error).message}; it has ${messages.length}`, { cause: e });
      }
    },
    byRecipient(addr) {
      const a = addr.toLowerCase();
      return messages.filter((m) => m.rcptTo.some((r) => r.toLowerCase() === a));
    },
    close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function toMessage(session: SMTPServerSession, raw: Buffer, id: string): ReceivedMessage {
  const env = session.envelope;
  const user = session.user as string | undefined;
  return {
    mailFrom: env.mailFrom ? env.mailFrom.address : '',
    rcptTo: env.rcptTo.map((r) => r.address),
    raw,
    mailParams: (env.mailFrom && env.mailFrom.args) || {},
    rcptParams: env.rcptTo.map((r) => r.args || {}),
    ...(user !== undefined ? { user } : {}),
    helo: session.hostNameAppearsAs,
    secure: session.secure,
    remoteAddress: session.remoteAddress,
    receivedAt: new Date(),
    id,
  };
}
