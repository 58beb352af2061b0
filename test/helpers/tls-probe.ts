/**
 * TLS handshakes with an SMTP listener, for certificate tests: STARTTLS (by hand) or implicit TLS, the
 * served certificate's fingerprint, and a line-oriented session over the TLS socket that can stay open.
 * The served certificate is verified against the certificates the test trusts (`trust`: the test's own
 * self-signed certificates), and the tests compare fingerprints to tell which one was served.
 */
import net from 'node:net';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';

export type TlsMode = 'starttls' | 'implicit';

/** The SHA-256 fingerprint of a PEM certificate, as Node prints it (AA:BB:...). */
export function fingerprintOf(pem: Buffer | string): string {
  return new X509Certificate(pem).fingerprint256;
}

/** Line-oriented SMTP replies on a socket; `next()` rejects when the connection closes or the reply is late. */
export class SmtpLines {
  private buffered = '';
  private partial: string[] = [];
  private readonly replies: string[] = [];
  private wake?: () => void;
  private closed = false;
  private readonly onData = (chunk: Buffer) => {
    this.buffered += chunk.toString('latin1');
    for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
      const line = this.buffered.slice(0, nl).replace(/\r$/, '');
      this.buffered = this.buffered.slice(nl + 1);
      this.partial.push(line);
      if (!/^\d{3}-/.test(line)) {
        this.replies.push(this.partial.join('\n'));
        this.partial = [];
      }
    }
    this.wake?.();
  };
  private readonly onClose = () => {
    this.closed = true;
    this.wake?.();
  };

  constructor(readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('close', this.onClose);
    socket.on('error', () => undefined); // shows up as close
  }

  /** The next reply; rejects when the connection closes first or the reply is late. */
  async next(timeoutMs = 10_000): Promise<string> {
    const r = await this.nextOrClosed(timeoutMs);
    if (r === null) throw new Error('connection closed before the reply');
    return r;
  }

  /** The next reply, or null when the connection closed first; rejects when the reply is late. */
  async nextOrClosed(timeoutMs = 10_000): Promise<string | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length === 0) {
      if (this.closed) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no SMTP reply within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.replies.shift()!;
  }

  async command(line: string): Promise<string> {
    this.socket.write(`${line}\r\n`);
    return this.next();
  }

  /** Stops reading the socket (to hand it to tls.connect). */
  detach(): net.Socket {
    this.socket.off('data', this.onData);
    this.socket.off('close', this.onClose);
    return this.socket;
  }
}

function connectPlain(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  const socket = net.connect({ host, port });
  return settle(socket, 'connect', timeoutMs, `connect to ${port}`);
}

/** A plain SMTP connection read line by line (no reply read yet). */
export async function connectSmtp(port: number, host = '127.0.0.1', timeoutMs = 10_000): Promise<SmtpLines> {
  return new SmtpLines(await connectPlain(host, port, timeoutMs));
}

function settle<T extends net.Socket>(socket: T, event: string, timeoutMs: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${what} timed out`));
    }, timeoutMs);
    socket.once(event, () => {
      clearTimeout(t);
      resolve(socket);
    });
    socket.once('error', (e) => {
      clearTimeout(t);
      socket.destroy();
      reject(e);
    });
  });
}

export interface TlsSession {
  lines: SmtpLines;
  socket: tls.TLSSocket;
  /** The fingerprint of the certificate the server presented in this handshake. */
  fingerprint: string;
}

/**
 * Opens a TLS session on an SMTP listener (STARTTLS or implicit), reads up to the EHLO reply after the
 * handshake, and leaves it open. Bounded by `timeoutMs` per step.
 */
export async function openTlsSession(
  port: number,
  mode: TlsMode,
  trust: Buffer[],
  timeoutMs = 10_000,
  host = '127.0.0.1',
): Promise<TlsSession> {
  let raw: net.Socket | undefined;
  try {
    raw = await connectPlain(host, port, timeoutMs);
    if (mode === 'starttls') {
      const plain = new SmtpLines(raw);
      expect(await plain.next(timeoutMs), /^220 /, 'greeting');
      expect(await plain.command('EHLO client.test'), /^250-STARTTLS$/m, 'EHLO');
      expect(await plain.command('STARTTLS'), /^220 /, 'STARTTLS');
      plain.detach();
    }
    const socket = tls.connect({ socket: raw, ca: trust, servername: 'localhost' });
    await settle(socket, 'secureConnect', timeoutMs, 'TLS handshake');
    const lines = new SmtpLines(socket);
    if (mode === 'implicit') expect(await lines.next(timeoutMs), /^220 /, 'greeting');
    expect(await lines.command('EHLO client.test'), /^250/, 'EHLO after TLS');
    return { lines, socket, fingerprint: socket.getPeerCertificate().fingerprint256 };
  } catch (e) {
    raw?.destroy();
    throw e;
  }
}

/** The fingerprint a new handshake on the listener gets (the session is closed at once). */
export async function servedFingerprint(
  port: number,
  mode: TlsMode,
  trust: Buffer[],
  host = '127.0.0.1',
): Promise<string> {
  const s = await openTlsSession(port, mode, trust, 10_000, host);
  s.socket.destroy();
  return s.fingerprint;
}

function expect(reply: string, re: RegExp, what: string): void {
  if (!re.test(reply)) throw new Error(`${what}: unexpected reply ${JSON.stringify(reply)}`);
}
