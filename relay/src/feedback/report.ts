/**
 * What a received report says (pure): a DSN (RFC 3464 message/delivery-status), an ARF complaint (RFC 5965
 * message/feedback-report), a non-standard bounce matched by bounce-rules.ts, or nothing known. The
 * addresses it names come from the report's fields, then from the returned original message's headers.
 */
import { header, parseFields, parseMime, splitHeaders, walk, type MimePart } from './mime.js';
import { matchBounceRule } from './bounce-rules.js';

/** Text scanned by the rules and kept for inspection: the first 64 KiB. */
const MAX_TEXT = 64 * 1024;
/** The part of a message/delivery-status body read. */
const MAX_DSN_BYTES = 256 * 1024;

export interface DsnRecipient {
  recipient: string;
  /** failed, delayed, delivered, relayed, expanded (lower case). */
  action: string;
  /** The enhanced status, e.g. 5.1.1. */
  status: string;
  diagnostic?: string;
}

export interface OriginalMessage {
  messageId?: string;
  /** Addresses in To (at most 10). */
  to: string[];
  /** The envelope sender recorded in the original's Return-Path, when the report includes it. */
  returnPath?: string;
}

export type Report =
  | { kind: 'dsn'; recipients: DsnRecipient[]; original: OriginalMessage; rule?: string }
  | {
      kind: 'arf';
      feedbackType: string;
      reporter?: string;
      recipients: string[];
      original: OriginalMessage;
    }
  | { kind: 'unknown'; original: OriginalMessage };

/** `type;address` (Final-Recipient: rfc822; bob@example.org) or a bare address, lower case. */
export function addressOf(v: string | undefined): string | undefined {
  if (!v) return undefined;
  const s = v.includes(';') ? v.slice(v.indexOf(';') + 1) : v;
  const m = /<?([^\s<>"@]{1,64}@[A-Za-z0-9.-]{1,253})>?/.exec(s.trim().slice(0, 1000));
  return m ? m[1].toLowerCase() : undefined;
}

function addresses(v: string | undefined, max = 10): string[] {
  if (!v) return [];
  // bounded repetitions: an unbounded one backtracks quadratically over a long run without an address
  return [...v.matchAll(/[^\s<>",;:@]{1,64}@[A-Za-z0-9.-]{0,252}[A-Za-z0-9]/g)]
    .slice(0, max)
    .map((m) => m[0].toLowerCase());
}

function originalOf(parts: MimePart[]): OriginalMessage {
  const p = parts.find((x) => x.type === 'message/rfc822' || x.type === 'text/rfc822-headers');
  if (!p) return { to: [] };
  const { headers } = splitHeaders(p.body);
  const mid = header({ headers }, 'message-id');
  const rp = header({ headers }, 'return-path');
  return {
    ...(mid ? { messageId: mid.trim() } : {}),
    to: addresses(header({ headers }, 'to')),
    ...(addressOf(rp) ? { returnPath: addressOf(rp)! } : {}),
  };
}

/** The per-recipient blocks of a message/delivery-status body (the first block is per message). */
function dsnRecipients(body: Buffer): DsnRecipient[] {
  // 100 recipient blocks fit many times over in the first MAX_DSN_BYTES
  const blocks = body
    .subarray(0, MAX_DSN_BYTES)
    .toString('utf8')
    .split(/\r?\n[ \t]*\r?\n/);
  const out: DsnRecipient[] = [];
  for (const b of blocks.slice(1)) {
    const f = { headers: parseFields(b) };
    const rcpt = addressOf(header(f, 'final-recipient')) ?? addressOf(header(f, 'original-recipient'));
    if (!rcpt) continue;
    const status = /([245])\.[0-9]{1,3}\.[0-9]{1,3}/.exec(header(f, 'status') ?? '')?.[0] ?? '';
    const diagnostic = header(f, 'diagnostic-code');
    out.push({
      recipient: rcpt,
      action: (header(f, 'action') ?? '').toLowerCase(),
      status,
      ...(diagnostic ? { diagnostic: diagnostic.slice(0, 500) } : {}),
    });
    if (out.length >= 100) break;
  }
  return out;
}

/** The first text/plain part (or the body of a single-part message), cut to 64 KiB. */
function plainText(root: MimePart): string {
  const p = walk(root).find((x) => x.parts.length === 0 && x.type === 'text/plain') ?? root;
  return p.body.subarray(0, MAX_TEXT).toString('utf8');
}

export function readReport(raw: Buffer): Report {
  const root = parseMime(raw);
  const parts = walk(root);
  const original = originalOf(parts);
  const fr = parts.find((p) => p.type === 'message/feedback-report');
  if (fr) {
    const f = { headers: parseFields(fr.body.toString('utf8')) };
    const rcpts: string[] = [];
    for (const [n, v] of f.headers) if (n === 'original-rcpt-to' && addressOf(v)) rcpts.push(addressOf(v)!);
    const reporter = header(f, 'reporting-mta') ?? header(f, 'user-agent');
    return {
      kind: 'arf',
      feedbackType: (header(f, 'feedback-type') ?? 'abuse').toLowerCase().slice(0, 40),
      ...(reporter ? { reporter: reporter.slice(0, 200) } : {}),
      recipients: rcpts.length ? rcpts.slice(0, 10) : original.to,
      original,
    };
  }
  const ds = parts.find(
    (p) => p.type === 'message/delivery-status' || p.type === 'message/global-delivery-status',
  );
  if (ds) return { kind: 'dsn', recipients: dsnRecipients(ds.body), original };
  const text = plainText(root);
  const rule = matchBounceRule(text);
  if (rule) {
    const named = addresses(text, 20);
    return {
      kind: 'dsn',
      rule: rule.rule,
      recipients: named.map((r) => ({ recipient: r, action: 'failed', status: rule.status })),
      original,
    };
  }
  return { kind: 'unknown', original };
}
