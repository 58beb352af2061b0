/**
 * A minimal Redis client (RESP2 over one TCP connection), enough for the shared rate-limit store: AUTH,
 * EVALSHA/EVAL and PING. Written here rather than taken as a dependency because the relay needs very
 * little of Redis and needs it bounded in every direction, which is easier to show in ~200 lines:
 *
 * - every command has a deadline (`timeoutMs`); a connection that misses one is closed, because a server
 *   that does not answer within the deadline is treated as down, and closing it keeps replies in order;
 * - while disconnected, commands fail at once (no queueing), and reconnects back off exponentially from
 *   `backoffMinMs` to `backoffMaxMs`;
 * - at most `maxInFlight` commands wait for a reply; more fail at once;
 * - replies are parsed incrementally, and one larger than `maxReplyBytes` closes the connection.
 *
 * Errors are RespError: `kind` tells a server error reply (`reply`) from the transport ones.
 */
import net from 'node:net';

export type RespValue = string | number | null | RespValue[] | Error;

export type RespErrorKind = 'down' | 'timeout' | 'busy' | 'reply' | 'closed';

export class RespError extends Error {
  constructor(
    readonly kind: RespErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'RespError';
  }
}

export interface RespClientOptions {
  host: string;
  port: number;
  password?: string;
  username?: string;
  timeoutMs: number;
  maxInFlight?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  maxReplyBytes?: number;
  /** Called when the connection is established (true) or an established one is lost (false, with why). */
  onState?: (up: boolean, why?: string) => void;
}

/** Encodes one command as a RESP array of bulk strings. */
export function encodeCommand(args: (string | number)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.from(String(a), 'utf8');
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/**
 * Parses one RESP2 value at `pos` of `buf`. Returns the value and the position after it, or undefined
 * when `buf` ends before the value does. Throws on a malformed stream.
 */
export function parseReply(buf: Buffer, pos = 0, depth = 0): { value: RespValue; end: number } | undefined {
  if (depth > 8) throw new Error('RESP: nesting too deep');
  if (pos >= buf.length) return undefined;
  const eol = buf.indexOf('\r\n', pos);
  if (eol < 0) return undefined;
  const type = String.fromCharCode(buf[pos]);
  const line = buf.toString('utf8', pos + 1, eol);
  const next = eol + 2;
  switch (type) {
    case '+':
      return { value: line, end: next };
    case '-':
      return { value: new Error(line), end: next };
    case ':': {
      const n = Number(line);
      if (!Number.isFinite(n) || !/^-?\d+$/.test(line)) throw new Error(`RESP: bad integer ${line}`);
      return { value: n, end: next };
    }
    case '$': {
      const len = Number(line);
      if (len === -1) return { value: null, end: next };
      if (!Number.isSafeInteger(len) || len < 0) throw new Error(`RESP: bad length ${line}`);
      if (buf.length < next + len + 2) return undefined;
      return { value: buf.toString('utf8', next, next + len), end: next + len + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count === -1) return { value: null, end: next };
      if (!Number.isSafeInteger(count) || count < 0 || count > 1_000_000)
        throw new Error(`RESP: bad array length ${line}`);
      const out: RespValue[] = [];
      let p = next;
      for (let i = 0; i < count; i++) {
        const r = parseReply(buf, p, depth + 1);
        if (!r) return undefined;
        out.push(r.value);
        p = r.end;
      }
      return { value: out, end: p };
    }
    default:
      throw new Error(`RESP: unexpected type byte ${JSON.stringify(type)}`);
  }
}

interface Pending {
  resolve: (v: RespValue) => void;
  reject: (e: RespError) => void;
  timer: NodeJS.Timeout;
}

export class RespClient {
  private sock: net.Socket | undefined;
  private up = false;
  private closed = false;
  private buf: Buffer = Buffer.alloc(0);
  private readonly pending: Pending[] = [];
  private backoffMs: number;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private readonly o: Required<Omit<RespClientOptions, 'password' | 'username' | 'onState'>> &
    RespClientOptions;

  constructor(opts: RespClientOptions) {
    this.o = {
      maxInFlight: 1000,
      backoffMinMs: 100,
      backoffMaxMs: 5000,
      maxReplyBytes: 1 << 20,
      ...opts,
    };
    this.backoffMs = this.o.backoffMinMs;
    this.connect();
  }

  get connected(): boolean {
    return this.up;
  }

  get inFlight(): number {
    return this.pending.length;
  }

  /** Sends one command; rejects with a RespError at once when down or busy, or after the deadline. */
  command(args: (string | number)[]): Promise<RespValue> {
    if (this.closed) return Promise.reject(new RespError('closed', 'client closed'));
    if (!this.up || !this.sock) return Promise.reject(new RespError('down', 'not connected'));
    if (this.pending.length >= this.o.maxInFlight)
      return Promise.reject(new RespError('busy', `${this.pending.length} commands in flight`));
    return this.send(args);
  }

  close(): void {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.drop('client closed', 'closed');
  }

  private send(args: (string | number)[]): Promise<RespValue> {
    const sock = this.sock!;
    return new Promise<RespValue>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.drop(`no reply within ${this.o.timeoutMs} ms`, 'timeout');
      }, this.o.timeoutMs);
      timer.unref();
      this.pending.push({ resolve, reject, timer });
      sock.write(encodeCommand(args));
    });
  }

  private connect(): void {
    if (this.closed) return;
    const sock = net.connect({ host: this.o.host, port: this.o.port, noDelay: true });
    this.sock = sock;
    sock.unref();
    const connectTimer = setTimeout(() => {
      sock.destroy(new Error(`connect timed out after ${this.o.timeoutMs} ms`));
    }, this.o.timeoutMs);
    connectTimer.unref();
    sock.on('connect', () => {
      clearTimeout(connectTimer);
      if (this.o.password !== undefined) {
        const auth = this.o.username ? ['AUTH', this.o.username, this.o.password] : ['AUTH', this.o.password];
        this.send(auth).then(
          (v) => {
            if (v instanceof Error) this.drop(`AUTH refused: ${v.message}`, 'down');
            else this.markUp();
          },
          () => {},
        );
      } else {
        this.markUp();
      }
    });
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', () => {}); // 'close' follows and says why
    sock.on('close', () => {
      clearTimeout(connectTimer);
      if (this.sock === sock) this.drop('connection closed', 'down');
    });
  }

  private markUp(): void {
    this.up = true;
    this.backoffMs = this.o.backoffMinMs;
    this.o.onState?.(true);
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    if (this.buf.length > this.o.maxReplyBytes) return this.drop('reply too large', 'down');
    let pos = 0;
    for (;;) {
      let r;
      try {
        r = parseReply(this.buf, pos);
      } catch (e) {
        return this.drop((e as Error).message, 'down');
      }
      if (!r) break;
      pos = r.end;
      const p = this.pending.shift();
      if (!p) return this.drop('reply without a command', 'down');
      clearTimeout(p.timer);
      p.resolve(r.value);
    }
    this.buf = pos >= this.buf.length ? Buffer.alloc(0) : this.buf.subarray(pos);
  }

  /** Closes the connection, fails what is in flight, and schedules a reconnect (unless closed). */
  private drop(why: string, kind: RespErrorKind): void {
    const sock = this.sock;
    this.sock = undefined;
    const wasUp = this.up;
    this.up = false;
    this.buf = Buffer.alloc(0);
    sock?.destroy();
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(new RespError(kind, why));
    }
    if (wasUp) this.o.onState?.(false, why);
    if (this.closed || this.reconnectTimer) return;
    const wait = this.backoffMs;
    this.backoffMs = Math.min(this.o.backoffMaxMs, this.backoffMs * 2);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.connect();
    }, wait);
    this.reconnectTimer.unref();
  }
}
