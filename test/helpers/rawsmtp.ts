/** A tiny raw-socket SMTP client for bad-input tests: sends exactly what it is told, collects the replies. */
import net from 'node:net';

/**
 * One step of a script:
 * - a string: a command line (CRLF appended unless it already ends with "\n"); waits for one reply;
 * - a Buffer: sent as is; waits for one reply;
 * - `{ raw, expectReplies }`: sent as is, then waits for `expectReplies` replies (0: none), e.g. a
 *   whole DATA payload ending in "\r\n.\r\n", or several pipelined commands.
 */
export type RawStep = string | Buffer | { raw: string | Buffer; expectReplies: number };

export interface RawSmtpOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** The client's own address (any of 127.0.0.0/8 on loopback), to act as several clients. */
  localAddress?: string;
  /** Longest wait for the connection and for each expected reply (default 10 000 ms). */
  timeoutMs?: number;
  /** Wait for the greeting before the first step (default true). */
  readGreeting?: boolean;
}

/**
 * Connects to `host:port`, reads the greeting, runs `script` and resolves with every reply received,
 * in order, the greeting first. A multi-line reply is one entry, its lines joined with "\n". When the
 * server closes the connection the script stops there and the replies so far are returned; a reply
 * that does not come within the timeout rejects (the error lists the replies so far).
 */
export async function rawSmtp(port: number, script: RawStep[], opts: RawSmtpOptions = {}): Promise<string[]> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const socket = net.connect({
    host: opts.host ?? '127.0.0.1',
    port,
    ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
  });
  socket.setEncoding('utf8');
  const replies: string[] = [];
  let partial: string[] = [];
  let buffered = '';
  let closed = false;
  let wake: (() => void) | undefined;

  socket.on('data', (chunk: string) => {
    buffered += chunk;
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl).replace(/\r$/, '');
      buffered = buffered.slice(nl + 1);
      partial.push(line);
      if (!/^\d{3}-/.test(line)) {
        replies.push(partial.join('\n'));
        partial = [];
      }
    }
    wake?.();
  });
  socket.on('close', () => {
    closed = true;
    wake?.();
  });
  socket.on('error', () => {
    /* a reset shows up as 'close' right after */
  });

  /** Waits until `total` replies have arrived; false if the connection closed first. */
  const until = async (total: number, what: string): Promise<boolean> => {
    const deadline = Date.now() + timeoutMs;
    while (replies.length < total) {
      if (closed) return false;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `rawSmtp: no reply to ${what} within ${timeoutMs} ms; replies so far: ${JSON.stringify(replies)}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
    return true;
  };

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`rawSmtp: connect to port ${port} timed out`)),
        timeoutMs,
      );
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    let expected = 0;
    if (opts.readGreeting ?? true) {
      expected = 1;
      if (!(await until(expected, 'the greeting'))) return replies.slice();
    }
    for (const step of script) {
      if (closed) break;
      let data: string | Buffer;
      let n = 1;
      if (typeof step === 'string') data = step.endsWith('\n') ? step : `${step}\r\n`;
      else if (Buffer.isBuffer(step)) data = step;
      else ({ raw: data, expectReplies: n } = step);
      socket.write(data);
      expected += n;
      const what = JSON.stringify(String(data).slice(0, 60));
      if (!(await until(expected, what))) break;
    }
    return replies.slice();
  } finally {
    socket.destroy();
  }
}
