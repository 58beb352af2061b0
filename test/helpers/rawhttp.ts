/**
 * A raw-socket HTTP/1.1 client for bad-input tests: sends exactly the bytes it is given (requests fetch
 * refuses to send: malformed targets, NUL bytes, odd methods, pipelined requests) and parses the answers.
 */
import net from 'node:net';

export interface RawHttpResponse {
  status: number;
  /** Header names in lower case. */
  headers: Record<string, string>;
  body: Buffer;
}

export interface RawHttpOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Give up (reject) when the server has not closed the connection by then (default 10 000 ms). */
  timeoutMs?: number;
  /** The requests were HEAD requests: the answers have no body whatever their headers say. */
  head?: boolean;
}

/**
 * Sends `data` (or each part of it in turn, as the socket takes it) and reads until the server closes the
 * connection, so end the last request with `Connection: close`. Resolves with every answer in order, and
 * with `reset` when the connection ended in an error (e.g. ECONNRESET) instead of a clean close.
 */
export async function rawHttp(
  port: number,
  data: string | Buffer | Iterable<string | Buffer>,
  opts: RawHttpOptions = {},
): Promise<{ responses: RawHttpResponse[]; reset: boolean }> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const socket = net.connect({ host: opts.host ?? '127.0.0.1', port });
  const chunks: Buffer[] = [];
  let reset = false;
  socket.on('data', (c: Buffer) => chunks.push(c));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`rawHttp: port ${port} did not close the connection within ${timeoutMs} ms`)),
        timeoutMs,
      );
      socket.once('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'ECONNREFUSED') {
          clearTimeout(timer);
          reject(e);
        } else reset = true; // 'close' follows
      });
      socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once('connect', async () => {
        const parts = typeof data === 'string' || Buffer.isBuffer(data) ? [data] : data;
        for (const p of parts) {
          if (socket.destroyed) return;
          if (!socket.write(p)) await new Promise((r) => socket.once('drain', r).once('close', r));
        }
      });
    });
  } finally {
    socket.destroy();
  }
  return { responses: parseResponses(Buffer.concat(chunks), opts.head ?? false), reset };
}

/** Parses consecutive HTTP/1.1 answers (Content-Length, chunked, or delimited by the close). */
export function parseResponses(buf: Buffer, head: boolean): RawHttpResponse[] {
  const out: RawHttpResponse[] = [];
  let at = 0;
  while (at < buf.length) {
    const end = buf.indexOf('\r\n\r\n', at);
    if (end < 0)
      throw new Error(`rawHttp: incomplete answer: ${JSON.stringify(buf.subarray(at).toString())}`);
    const lines = buf.subarray(at, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    if (!m) throw new Error(`rawHttp: not a status line: ${JSON.stringify(lines[0])}`);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const colon = l.indexOf(':');
      headers[l.slice(0, colon).trim().toLowerCase()] = l.slice(colon + 1).trim();
    }
    at = end + 4;
    let body: Buffer;
    if (head) body = Buffer.alloc(0);
    else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      body = buf.subarray(at, at + n);
      at += n;
    } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      const parts: Buffer[] = [];
      for (;;) {
        const eol = buf.indexOf('\r\n', at);
        if (eol < 0) throw new Error('rawHttp: chunked answer cut short');
        const n = parseInt(buf.subarray(at, eol).toString('latin1'), 16);
        at = eol + 2;
        if (n === 0) {
          at = buf.indexOf('\r\n', at) + 2; // no trailers expected
          break;
        }
        parts.push(buf.subarray(at, at + n));
        at += n + 2;
      }
      body = Buffer.concat(parts);
    } else {
      body = buf.subarray(at);
      at = buf.length;
    }
    out.push({ status: Number(m[1]), headers, body });
  }
  return out;
}
