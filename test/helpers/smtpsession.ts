/**
 * A lean SMTP client session for load and failure tests: one connection, reused for many messages, with
 * the envelope pipelined (MAIL, RCPT..., DATA in one write, RFC 2920). Every reply is returned as is, so
 * a test sees exactly which command got a 452. Not a general client: no TLS, no AUTH.
 */
import net from 'node:net';

export interface SmtpReply {
  code: number;
  /** All lines of the reply, joined with "\n", codes included. */
  text: string;
}

export interface SmtpSessionOptions {
  host?: string;
  /** Longest wait for the connection and for each reply (default 15 000 ms). */
  timeoutMs?: number;
  /** EHLO name (default client.test). */
  ehlo?: string;
}

/** The replies of one transaction; `data` is absent when DATA was never answered with 354. */
export interface TxReplies {
  mail: SmtpReply;
  rcpts: SmtpReply[];
  /** Reply to the DATA command (354 when the message was sent). */
  dataCmd: SmtpReply;
  /** Reply to the end of the message (250 = accepted). */
  data?: SmtpReply;
}

/** Thrown when the connection closes or a reply does not come in time. */
export class SmtpSessionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SmtpSessionError';
  }
}

/** Dot-stuffs `msg`, makes it end in CRLF, and appends the end-of-data line. */
export function dataPayload(msg: Buffer | string): Buffer {
  let s = Buffer.isBuffer(msg) ? msg.toString('latin1') : msg;
  s = s.replace(/(^|\n)\./g, '$1..');
  if (!s.endsWith('\r\n')) s += '\r\n';
  return Buffer.from(`${s}.\r\n`, 'latin1');
}

export class SmtpSession {
  private buffered = '';
  private lines: string[] = [];
  private readonly replies: SmtpReply[] = [];
  private waiter?: () => void;
  private closedWith?: string;
  readonly greeting: Promise<SmtpReply>;
  ehloReply?: SmtpReply;

  private constructor(
    private readonly socket: net.Socket,
    private readonly timeoutMs: number,
  ) {
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (e) => {
      this.closedWith ??= `connection error: ${e.message}`;
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closedWith ??= 'connection closed by the server';
      this.waiter?.();
    });
    this.greeting = this.next();
  }

  /** Connects, reads the greeting (must be 220) and says EHLO (must be 250). */
  static async open(port: number, opts: SmtpSessionOptions = {}): Promise<SmtpSession> {
    const timeoutMs = opts.timeoutMs ?? 15_000;
    const socket = net.connect({ host: opts.host ?? '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        socket.destroy();
        reject(new SmtpSessionError(`connect to port ${port} timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(t);
        resolve();
      });
      socket.once('error', (e) => {
        clearTimeout(t);
        reject(new SmtpSessionError(`connect to port ${port}: ${e.message}`));
      });
    });
    const s = new SmtpSession(socket, timeoutMs);
    try {
      const g = await s.greeting;
      if (g.code !== 220) throw new SmtpSessionError(`greeting: ${g.text}`);
      s.ehloReply = (await s.command(`EHLO ${opts.ehlo ?? 'client.test'}`))[0];
      if (s.ehloReply.code !== 250) throw new SmtpSessionError(`EHLO: ${s.ehloReply.text}`);
    } catch (e) {
      s.destroy();
      throw e;
    }
    return s;
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
      const line = this.buffered.slice(0, nl).replace(/\r$/, '');
      this.buffered = this.buffered.slice(nl + 1);
      this.lines.push(line);
      if (!/^\d{3}-/.test(line)) {
        this.replies.push({ code: Number(line.slice(0, 3)) || 0, text: this.lines.join('\n') });
        this.lines = [];
      }
    }
    this.waiter?.();
  }

  /** The next reply; rejects when the connection is gone first or the reply is late. */
  async next(): Promise<SmtpReply> {
    const deadline = Date.now() + this.timeoutMs;
    while (this.replies.length === 0) {
      if (this.closedWith) throw new SmtpSessionError(this.closedWith);
      const left = deadline - Date.now();
      if (left <= 0) {
        this.destroy();
        throw new SmtpSessionError(`no reply within ${this.timeoutMs} ms`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    return this.replies.shift()!;
  }

  /** Sends the command lines in one write (pipelining) and resolves with one reply per line. */
  async command(...lines: string[]): Promise<SmtpReply[]> {
    if (this.closedWith) throw new SmtpSessionError(this.closedWith);
    this.socket.write(lines.map((l) => `${l}\r\n`).join(''), 'latin1');
    const out: SmtpReply[] = [];
    for (let i = 0; i < lines.length; i++) out.push(await this.next());
    return out;
  }

  /**
   * One transaction: MAIL, RCPT... and DATA pipelined; the message (dot-stuffed here) only when DATA got
   * 354. Resolves with every reply; rejects only when the connection fails.
   */
  async send(from: string, to: string[], message: Buffer | string): Promise<TxReplies> {
    const [mail, ...rest] = await this.command(
      `MAIL FROM:<${from}>`,
      ...to.map((t) => `RCPT TO:<${t}>`),
      'DATA',
    );
    const dataCmd = rest.pop()!;
    if (dataCmd.code !== 354) return { mail, rcpts: rest, dataCmd };
    return { mail, rcpts: rest, dataCmd, data: await this.sendData(message) };
  }

  /** After a 354: sends the message (dot-stuffed here) and resolves with the reply to its end. */
  async sendData(message: Buffer | string): Promise<SmtpReply> {
    if (this.closedWith) throw new SmtpSessionError(this.closedWith);
    this.socket.write(dataPayload(message));
    return this.next();
  }

  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  /** QUIT (waits for the 221 at most the reply timeout), then closes. */
  async quit(): Promise<void> {
    try {
      if (!this.closedWith) await this.command('QUIT');
    } catch {
      /* closing anyway */
    } finally {
      this.destroy();
    }
  }

  destroy(): void {
    this.closedWith ??= 'closed by the client';
    this.socket.destroy();
    this.waiter?.();
  }
}
