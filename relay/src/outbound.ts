/**
 * One outbound SMTP session to a next hop, on nodemailer's SMTPConnection, with a promise API and the
 * reply of every recipient classified. A session may carry several transactions (connection reuse).
 */
import type { Readable } from 'node:stream';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { OutboundTls } from './config.js';
import type { ReplyInfo } from './delivery/classify.js';

export interface Hop {
  /** What to connect to: an IP address, or a host name for static routes. */
  host: string;
  port: number;
  /** The name we report and verify TLS against (MX exchange or route host). */
  name: string;
  /**
   * A route's mode, or for an MX host its TLS level (delivery/tls-policy.ts): `opportunistic`, `encrypt`
   * (level `required`: STARTTLS, certificate unchecked) or `verify`.
   */
  tls: OutboundTls | 'encrypt';
  /** Trust anchors for a verified certificate: the system CAs when absent (outboundTls.caFile adds some). */
  ca?: string[];
  credentials?: { username: string; password: string };
  kind: 'mx' | 'smarthost' | 'domain' | 'backup';
}

export interface OutboundOptions {
  ehloName: string;
  localAddress?: string;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
}

export interface RcptReply {
  code?: number;
  reply: string;
}

export interface TxResult {
  /** Per recipient, in the order given: the reply to RCPT (refused) or to the end of DATA (accepted). */
  rcpts: ({ ok: true; reply: string } | { ok: false; code?: number; reply: string })[];
}

/**
 * An SMTP-level failure affecting the whole transaction (connect, greeting, EHLO, TLS, AUTH, MAIL, DATA).
 * What it means for the recipients is for the classifier to say (`cause`, see delivery/classify.ts).
 */
export class HopError extends Error {
  constructor(
    readonly stage: 'connect' | 'session' | 'mail' | 'data',
    readonly code: number | undefined,
    /** The reply or error text as reported (may carry our own prefix). */
    readonly reply: string,
    readonly errCode?: string,
    /** The server's reply or nodemailer's error message, as it came. */
    readonly response: string = reply,
    /** Whether the session had been set up when it failed; unknown for failures while opening it. */
    readonly connected?: boolean,
  ) {
    super(reply);
    this.name = 'HopError';
  }

  /** The failure as the classifier takes it. */
  get replyInfo(): ReplyInfo {
    return {
      stage: this.stage,
      code: this.code,
      errCode: this.errCode,
      message: this.response,
      ...(this.connected === undefined ? {} : { connected: this.connected }),
    };
  }
}

function oneLine(s: unknown): string {
  return String(s ?? '')
    .replace(/[\r\n]+/g, ' ')
    .trim()
    .slice(0, 500);
}

type NmError = Error & {
  code?: string;
  responseCode?: number;
  response?: string;
  command?: string;
  rejectedErrors?: (NmError & { recipient?: string })[];
};

function toHopError(err: NmError, fallbackStage: HopError['stage']): HopError {
  const cmd = (err.command ?? '').toUpperCase();
  const stage: HopError['stage'] =
    cmd === 'CONN' ||
    err.code === 'ECONNECTION' ||
    err.code === 'ETIMEDOUT' ||
    err.code === 'EDNS' ||
    err.code === 'ESOCKET'
      ? fallbackStage === 'data'
        ? 'data'
        : 'connect'
      : cmd.startsWith('MAIL')
        ? 'mail'
        : cmd === 'DATA' || cmd === '.'
          ? 'data'
          : fallbackStage;
  const text = oneLine(err.response || err.message);
  // a failure during a transaction struck an established session; one while opening it may not have
  const connected = fallbackStage === 'connect' ? undefined : true;
  return new HopError(stage, err.responseCode, text, err.code, text, connected);
}

/** Whether a hop's TLS mode requires a certificate that verifies for its name. */
export function verifies(mode: Hop['tls']): boolean {
  return mode === 'required' || mode === 'verify' || mode === 'implicit';
}

/**
 * The TLS state of a set-up connection, read from nodemailer's socket (`_socket`, a TLSSocket once
 * STARTTLS or implicit TLS succeeded): `authorized` covers the chain and the host name (Node checks the
 * servername even when it does not reject), which is what MTA-STS `testing` reports on.
 */
function tlsResultOf(conn: SMTPConnection): OutboundSession['tlsResult'] {
  const c = conn as unknown as { secure?: boolean; _socket?: { authorized?: boolean } };
  if (!c.secure) return 'plaintext';
  return c._socket?.authorized === true ? 'verified' : 'unverified';
}

export class OutboundSession {
  readonly hop: Hop;
  private conn: SMTPConnection;
  private closed = false;
  transactions = 0;
  lastUsed = Date.now();

  /** The local (egress) address this session is bound to, if any. */
  localAddress?: string;
  /** What TLS the session got: verified (for hop.name), encrypted but unverified, or none. */
  tlsResult: 'verified' | 'unverified' | 'plaintext' = 'plaintext';

  private constructor(hop: Hop, conn: SMTPConnection) {
    this.hop = hop;
    this.conn = conn;
    conn.on('error', () => {
      this.closed = true;
    });
    conn.on('end', () => {
      this.closed = true;
    });
  }

  get usable(): boolean {
    return !this.closed;
  }

  static open(hop: Hop, o: OutboundOptions): Promise<OutboundSession> {
    const conn = new SMTPConnection({
      host: hop.host,
      port: hop.port,
      name: o.ehloName,
      secure: hop.tls === 'implicit',
      ignoreTLS: hop.tls === 'none',
      requireTLS: hop.tls === 'required' || hop.tls === 'verify' || hop.tls === 'encrypt',
      opportunisticTLS: hop.tls === 'opportunistic',
      // Opportunistic STARTTLS cannot verify certificates (MX certificates rarely match, RFC 7435), nor can
      // `encrypt` (Postfix's encrypt level); when a route requires TLS, or the TLS policy says verify, the
      // certificate must verify against the hop's name (route host or MX host name).
      tls: {
        rejectUnauthorized: verifies(hop.tls),
        servername: hop.name,
        minVersion: 'TLSv1.2',
        ...(hop.ca ? { ca: hop.ca } : {}),
      },
      localAddress: o.localAddress,
      connectionTimeout: o.connectTimeoutMs,
      greetingTimeout: o.connectTimeoutMs,
      socketTimeout: o.commandTimeoutMs,
      allowInternalNetworkInterfaces: true,
      logger: false,
    } as ConstructorParameters<typeof SMTPConnection>[0]);
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err: NmError) => {
        if (settled) return;
        settled = true;
        conn.close();
        reject(toHopError(err, 'connect'));
      };
      conn.once('error', fail);
      conn.connect(() => {
        const ready = () => {
          if (settled) return;
          settled = true;
          conn.removeListener('error', fail);
          const session = new OutboundSession(hop, conn);
          session.tlsResult = tlsResultOf(conn);
          if (o.localAddress) session.localAddress = o.localAddress;
          resolve(session);
        };
        if (!hop.credentials) return ready();
        conn.login({ user: hop.credentials.username, pass: hop.credentials.password }, (err) => {
          if (err) {
            const he = toHopError(err as NmError, 'session');
            settled = true;
            conn.close();
            reject(
              new HopError(
                'session',
                he.code,
                `authentication failed: ${he.reply}`,
                'EAUTH',
                he.response,
                true,
              ),
            );
          } else ready();
        });
      });
    });
  }

  /** Runs one transaction. Throws HopError when the whole transaction failed (then the session is closed). */
  send(
    envelope: {
      from: string;
      to: string[];
      size: number;
      eightBit: boolean;
      dsn?: { ret?: string; envid?: string; notify?: string[]; orcpt?: string };
    },
    body: Buffer | Readable,
  ): Promise<TxResult> {
    this.transactions++;
    this.lastUsed = Date.now();
    const dsn =
      envelope.dsn && (envelope.dsn.ret || envelope.dsn.envid || envelope.dsn.notify || envelope.dsn.orcpt)
        ? {
            ret: envelope.dsn.ret,
            envid: envelope.dsn.envid,
            notify: envelope.dsn.notify,
            orcpt: envelope.dsn.orcpt,
          }
        : undefined;
    return new Promise((resolve, reject) => {
      this.conn.send(
        {
          from: envelope.from,
          to: envelope.to,
          size: envelope.size,
          use8BitMime: envelope.eightBit,
          ...(dsn ? { dsn } : {}),
        } as SMTPConnection.Envelope,
        body,
        (err, info) => {
          this.lastUsed = Date.now();
          if (err) {
            const e = err as NmError;
            if (e.code === 'EENVELOPE' && e.rejectedErrors?.length) {
              // every recipient refused: report each one's reply. The session is not reused: a RSET racing
              // the next transaction's envelope is not worth the saved handshake on this rare path.
              const byRcpt = new Map(
                e.rejectedErrors.map((r) => [String(r.recipient ?? '').toLowerCase(), r]),
              );
              resolve({
                rcpts: envelope.to.map((t) => {
                  const r = byRcpt.get(t.toLowerCase());
                  return {
                    ok: false as const,
                    code: r?.responseCode,
                    reply: oneLine(r?.response ?? e.response ?? e.message),
                  };
                }),
              });
              this.close();
              return;
            }
            this.close();
            reject(toHopError(e, e.command === 'DATA' || e.code === 'EMESSAGE' ? 'data' : 'mail'));
            return;
          }
          const rejected = new Map(
            ((info as { rejectedErrors?: NmError[] }).rejectedErrors ?? []).map((r) => [
              String((r as { recipient?: string }).recipient ?? '').toLowerCase(),
              r,
            ]),
          );
          const reply = oneLine(info.response);
          resolve({
            rcpts: envelope.to.map((t) => {
              const r = rejected.get(t.toLowerCase());
              return r
                ? { ok: false as const, code: r.responseCode, reply: oneLine(r.response ?? r.message) }
                : { ok: true as const, reply };
            }),
          });
        },
      );
    });
  }

  quit(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.quit();
    } catch {
      this.conn.close();
    }
  }

  close(): void {
    this.closed = true;
    this.conn.close();
  }
}
