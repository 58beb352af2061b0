/** Client side helpers: the swaks command line tool and nodemailer. */
import { spawn } from 'node:child_process';
import nodemailer from 'nodemailer';

export interface SwaksResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `swaks` with `args` (full transcript kept) and resolves with its exit code and output. A run
 * longer than `timeoutMs` (default 30 s) is killed and rejects.
 */
export function swaks(args: string[], timeoutMs = 30_000): Promise<SwaksResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('swaks', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) reject(new Error(`swaks timed out after ${timeoutMs} ms\n${stdout}\n${stderr}`));
      else resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr });
    });
  });
}

export interface SendMailOptions {
  /** Envelope sender and From header. */
  from: string;
  /** Envelope recipients and To header. */
  to: string[];
  subject?: string;
  /** Plain text body (default "test message"). */
  body?: string;
  /** Extra message headers. */
  headers?: Record<string, string>;
  auth?: { user: string; pass: string };
  /** Send these exact bytes as the message instead of building one (envelope still from/to). */
  raw?: string | Buffer;
  /** DSN parameters (sent only when the server advertises DSN). */
  dsn?: {
    ret?: 'Full' | 'HDRS';
    envid?: string;
    notify?: ('NEVER' | 'SUCCESS' | 'FAILURE' | 'DELAY')[];
    orcpt?: string;
  };
  /** Require STARTTLS (certificate not verified) instead of ignoring it. */
  starttls?: boolean;
  /** EHLO name (default "client.test"). */
  name?: string;
  /** Per-stage timeouts (connect, greeting, socket idle), default 15 s. */
  timeoutMs?: number;
  /** Server address (default 127.0.0.1). */
  host?: string;
}

/** nodemailer's result of a sent message; `response` is the server's final reply (e.g. "250 ... queued as X"). */
export interface SendMailInfo {
  messageId: string;
  response: string;
  accepted: string[];
  rejected: string[];
  envelope: { from: string | false; to: string[] };
}

const addressOf = (a: string | { address: string }): string => (typeof a === 'string' ? a : a.address);

/**
 * Sends one message to 127.0.0.1:`port` with nodemailer, over plain SMTP (STARTTLS ignored unless
 * `starttls`). Rejects
 * when the server refuses it; a partial refusal resolves with the refused recipients in `rejected`.
 */
export async function sendMail(port: number, opts: SendMailOptions): Promise<SendMailInfo> {
  const timeout = opts.timeoutMs ?? 15_000;
  const transport = nodemailer.createTransport({
    host: opts.host ?? '127.0.0.1',
    port,
    secure: false,
    ...(opts.starttls ? { requireTLS: true, tls: { rejectUnauthorized: false } } : { ignoreTLS: true }),
    name: opts.name ?? 'client.test',
    connectionTimeout: timeout,
    greetingTimeout: timeout,
    socketTimeout: timeout,
    ...(opts.auth ? { auth: { user: opts.auth.user, pass: opts.auth.pass } } : {}),
  });
  try {
    const info = await transport.sendMail({
      envelope: { from: opts.from, to: opts.to },
      ...(opts.raw !== undefined
        ? { raw: opts.raw }
        : {
            from: opts.from,
            to: opts.to,
            subject: opts.subject ?? 'test',
            text: opts.body ?? 'test message',
            ...(opts.headers ? { headers: opts.headers } : {}),
          }),
      ...(opts.dsn ? { dsn: opts.dsn } : {}),
    });
    return {
      messageId: info.messageId,
      response: info.response,
      accepted: info.accepted.map(addressOf),
      rejected: info.rejected.map(addressOf),
      envelope: { from: info.envelope.from, to: info.envelope.to },
    };
  } finally {
    transport.close();
  }
}
