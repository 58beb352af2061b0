/**
 * Delivery status notifications (RFC 3464, in a multipart/report of RFC 6522): rendering the bounce,
 * delay warning or success report sent to a message's envelope sender, and the NOTIFY rules of
 * RFC 3461 that decide which recipients go in one. Pure: the same input renders the same bytes.
 *
 * The DSN must be sent with a null reverse-path (`MAIL FROM:<>`) so that it can never bounce back.
 */
import { createHash } from 'node:crypto';
import { describeStatus, isStatusCode } from './delivery/classify.js';

export type DsnAction = 'failed' | 'delayed' | 'delivered' | 'relayed';

export interface DsnRecipient {
  /** The recipient as we tried to deliver to it (RCPT TO). */
  address: string;
  /** The ORCPT parameter as smtp-server hands it (already xtext-decoded), e.g. `rfc822;bob@example.org`. */
  orcpt?: string;
  /** `relayed`: passed on to a host that does not do DSNs (RFC 3461 §6.2), so no further report will come. */
  action: DsnAction;
  /** RFC 3463 status such as `5.1.1` (see `statusFor`). */
  status: string;
  /** The remote reply (`550 5.1.1 no such user`) or our own reason; rendered on one line. */
  diagnostic?: string;
  /** Host name (or `[ip]`) of the server that gave `diagnostic`. */
  remoteMta?: string;
  lastAttemptAt?: Date;
  /** For `delayed`: when the queue gives up. */
  willRetryUntil?: Date;
}

export interface DsnInput {
  /** Our host name: `From: MAILER-DAEMON@...` and `Reporting-MTA`. */
  reportingMta: string;
  queueId: string;
  arrivalDate: Date;
  /** The ENVID parameter (already xtext-decoded). */
  envid?: string;
  /** The RET parameter. Without it only the header section is returned. */
  ret?: 'FULL' | 'HDRS';
  /** The original envelope sender: the DSN goes to this address. Never empty (no DSN for `<>`). */
  sender: string;
  recipients: DsnRecipient[];
  /** The original message as queued. */
  original: Buffer;
  now: Date;
  /** Right-hand side of the DSN's Message-ID. */
  messageIdDomain: string;
}

const CRLF = '\r\n';
/** Header lines are folded to this length where there is white space to fold at. */
const FOLD_AT = 78;
/** Longest value kept in a header field; with the field name this stays under the 998 limit. */
const MAX_VALUE = 900;
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** An RFC 5322 date-time in UTC, e.g. `Tue, 2 Jan 2024 03:04:05 +0000`. */
export function rfc5322Date(d: Date): string {
  if (Number.isNaN(d.getTime())) throw new RangeError('invalid date');
  const p2 = (n: number) => String(n).padStart(2, '0');
  return (
    `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())} +0000`
  );
}

/**
 * Whether a recipient's NOTIFY parameter (RFC 3461 §4.1) asks for a DSN with this action. Without
 * NOTIFY: failures and delays yes (whether delay warnings are sent at all is the caller's config),
 * successes no. NEVER: none. Otherwise the listed kinds (`relayed` counts as SUCCESS).
 * Accepts the raw value (`SUCCESS,FAILURE`) or smtp-server's parsed list.
 */
export function dsnRecipientsWanted(
  notify: string | readonly string[] | undefined,
  action: DsnAction,
): boolean {
  const list = (typeof notify === 'string' ? notify.split(',') : (notify ?? []))
    .map((k) => k.trim().toUpperCase())
    .filter(Boolean);
  if (list.length === 0) return action === 'failed' || action === 'delayed';
  if (list.includes('NEVER')) return false;
  const keyword = action === 'failed' ? 'FAILURE' : action === 'delayed' ? 'DELAY' : 'SUCCESS';
  return list.includes(keyword);
}

/** Makes text safe for one header line: line breaks become spaces, control characters go, runs of spaces shrink. */
function oneLine(text: string, opts: { ascii?: boolean; max?: number } = {}): string {
  let out = '';
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if (c === 0x09 || c === 0x0a || c === 0x0d) out += ' ';
    else if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) continue;
    else if (opts.ascii && c > 0x7e) out += '?';
    else out += ch;
  }
  out = out.replace(/ {2,}/g, ' ').trim();
  const max = opts.max ?? MAX_VALUE;
  return out.length > max ? `${out.slice(0, max - 3)}...` : out;
}

/** A host name, address literal or similar token: only the characters such names use. */
function hostToken(text: string): string {
  return text.replace(/[^A-Za-z0-9.:_\-[\]]/g, '').slice(0, 255);
}

/** A header field, folded at spaces to about 78 columns, with its CRLF. */
function field(name: string, value: string): string {
  let out = `${name}:`;
  let line = out.length;
  let first = true;
  for (const word of value.split(' ').filter(Boolean)) {
    if (!first && line + 1 + word.length > FOLD_AT) {
      out += CRLF;
      line = 0;
    }
    out += ` ${word}`;
    line += 1 + word.length;
    first = false;
  }
  return out + CRLF;
}

/** RFC 6533 utf-8-addr-xtext: non-ASCII and `+`, `=`, `\` and space as `\x{HEX}`. */
function utf8AddrXtext(addr: string): string {
  let out = '';
  for (const ch of addr) {
    const c = ch.codePointAt(0)!;
    out +=
      c > 0x20 && c < 0x7f && ch !== '+' && ch !== '=' && ch !== '\\'
        ? ch
        : `\\x{${c.toString(16).toUpperCase()}}`;
  }
  return out;
}

/** `type; address` for Final-/Original-Recipient; a non-ASCII address becomes RFC 6533 `utf-8`. */
function typedAddress(type: string, address: string): string {
  const addr = oneLine(address);
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(addr) ? `${type}; ${addr}` : `utf-8; ${utf8AddrXtext(addr)}`;
}

function originalRecipient(orcpt: string): string {
  const semi = orcpt.indexOf(';');
  const type =
    semi > 0
      ? orcpt
          .slice(0, semi)
          .trim()
          .toLowerCase()
          .replace(/[^a-z0-9-]/g, '')
      : '';
  return semi > 0 && type ? typedAddress(type, orcpt.slice(semi + 1).trim()) : typedAddress('rfc822', orcpt);
}

/** Bare CR and bare LF become CRLF. */
function normalizeCrlf(buf: Buffer): Buffer {
  let clean = true;
  for (let i = 0; i < buf.length && clean; i++) {
    if (buf[i] === 0x0d) clean = buf[i + 1] === 0x0a;
    else if (buf[i] === 0x0a) clean = i > 0 && buf[i - 1] === 0x0d;
  }
  if (clean) return buf;
  const out = Buffer.allocUnsafe(buf.length * 2);
  let n = 0;
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i];
    if (b === 0x0d) {
      out[n++] = 0x0d;
      out[n++] = 0x0a;
      if (buf[i + 1] === 0x0a) i++;
    } else if (b === 0x0a) {
      out[n++] = 0x0d;
      out[n++] = 0x0a;
    } else out[n++] = b;
  }
  return out.subarray(0, n);
}

/** The header section of a CRLF message, each line with its CRLF, without the blank line. */
function headerSection(msg: Buffer): Buffer {
  if (msg.length >= 2 && msg[0] === 0x0d && msg[1] === 0x0a) return Buffer.alloc(0);
  const end = msg.indexOf('\r\n\r\n');
  if (end >= 0) return msg.subarray(0, end + 2);
  return msg.length === 0 || msg.subarray(-2).toString('latin1') === CRLF
    ? msg
    : Buffer.concat([msg, Buffer.from(CRLF)]);
}

/** What a CRLF buffer needs as a MIME body: 7bit, 8bit, or binary (NUL bytes or lines over 998 octets). */
function transferClass(buf: Buffer): '7bit' | '8bit' | 'binary' {
  let eight = false;
  let line = 0;
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i];
    if (b === 0x0d && buf[i + 1] === 0x0a) {
      line = 0;
      i++;
    } else if (b === 0) return 'binary';
    else {
      if (b > 0x7f) eight = true;
      if (++line > 998) return 'binary';
    }
  }
  return eight ? '8bit' : '7bit';
}

/** Quoted-printable (RFC 2045 §6.7) of a CRLF buffer, keeping its line structure. */
function quotedPrintable(buf: Buffer): Buffer {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i];
    if (b === 0x0d && buf[i + 1] === 0x0a) {
      out.push(cur, CRLF);
      cur = '';
      i++;
      continue;
    }
    const lineEnds = i + 1 === buf.length || (buf[i + 1] === 0x0d && buf[i + 2] === 0x0a);
    const literal = (b > 0x20 && b < 0x7f && b !== 0x3d) || ((b === 0x20 || b === 0x09) && !lineEnds);
    const token = literal ? String.fromCharCode(b) : `=${b.toString(16).toUpperCase().padStart(2, '0')}`;
    if (cur.length + token.length > 75) {
      out.push(cur, `=${CRLF}`);
      cur = '';
    }
    cur += token;
  }
  out.push(cur);
  return Buffer.from(out.join(''), 'latin1');
}

/** A text body part: 7bit as is, otherwise quoted-printable, so the DSN stays 7-bit clean. */
function textPart(type: string, description: string, body: Buffer): { head: string; body: Buffer } {
  const plain = transferClass(body) === '7bit';
  return {
    head:
      field('Content-Description', description) +
      field('Content-Type', type) +
      field('Content-Transfer-Encoding', plain ? '7bit' : 'quoted-printable'),
    body: plain ? body : quotedPrintable(body),
  };
}

/** Word-wraps one paragraph to 76 columns, continuation lines indented. */
function wrap(text: string, indent = '', rest = '    '): string {
  const lines: string[] = [];
  let line = indent;
  for (const word of text.split(' ').filter(Boolean)) {
    if (line.trim() && line.length + 1 + word.length > 76) {
      lines.push(line);
      line = rest + word;
    } else line += line.trim() ? ` ${word}` : word;
  }
  lines.push(line);
  return lines.join(CRLF) + CRLF;
}

function defaultStatus(action: DsnAction): string {
  return action === 'failed' ? '5.0.0' : action === 'delayed' ? '4.0.0' : '2.0.0';
}

const ACTION_TEXT: Record<DsnAction, string> = {
  failed: 'delivery failed',
  delayed: 'delivery delayed, still trying',
  delivered: 'delivered',
  relayed: 'relayed to a system that does not send delivery notifications',
};

/**
 * A multi-line SMTP reply as one line: `550-5.1.1 a` + `550 5.1.1 b` -> `550 5.1.1 a b`. Anything
 * else is returned as is (line breaks are dealt with later).
 */
function joinReply(text: string): string {
  const lines = text.split(/\r?\n|\r/).filter((l) => l.trim());
  const m = lines.length > 1 ? /^(\d{3})[ -](?:([245]\.\d{1,3}\.\d{1,3}) )?/.exec(lines[0]) : null;
  if (!m || !lines.every((l) => l.startsWith(m[1]))) return text;
  const strip = (l: string) => {
    const rest = l.slice(4).trimStart();
    return m[2] && rest.startsWith(`${m[2]} `) ? rest.slice(m[2].length + 1) : rest;
  };
  return [m[2] ? `${m[1]} ${m[2]}` : m[1], ...lines.map(strip)].join(' ');
}

/** `smtp` for a reply text starting with a reply code, else our own diagnostic type. */
function diagnosticCode(diagnostic: string): string {
  return /^[2-5]\d\d(?:[ -]|$)/.test(diagnostic) ? `smtp; ${diagnostic}` : `X-Cartero; ${diagnostic}`;
}

/** Renders a DSN for `input.sender` as a complete RFC 5322 message with CRLF line endings. */
export function renderDsn(input: DsnInput): Buffer {
  const sender = oneLine(input.sender).replace(/[<>]/g, '');
  if (!sender) throw new RangeError('no DSN is sent for a null reverse-path');
  if (input.recipients.length === 0) throw new RangeError('a DSN needs at least one recipient');
  const host = hostToken(input.reportingMta) || 'localhost';
  const queueId = oneLine(input.queueId, { ascii: true, max: 128 });
  const recipients = input.recipients.map((r) => ({
    ...r,
    address: oneLine(r.address),
    status: isStatusCode(r.status) ? r.status : defaultStatus(r.action),
    diagnostic: r.diagnostic === undefined ? '' : oneLine(joinReply(r.diagnostic), { ascii: true }),
    remoteMta: r.remoteMta === undefined ? '' : hostToken(r.remoteMta),
  }));
  const has = (a: DsnAction) => recipients.some((r) => r.action === a);

  // RFC 3461 §4.3: the full message goes back only with RET=FULL and only in a failure report; a
  // message that 7/8-bit MIME cannot carry (NUL bytes, overlong lines) is returned as headers.
  const original = normalizeCrlf(input.original);
  const fullClass = input.ret === 'FULL' && has('failed') ? transferClass(original) : undefined;
  const returnFull = fullClass !== undefined && fullClass !== 'binary';

  // 1. The human-readable explanation.
  const paragraphs = [`This is the mail delivery system at ${host}.`];
  if (has('failed')) paragraphs.push('Your message could not be delivered to one or more of its recipients.');
  if (has('delayed')) {
    paragraphs.push(
      'Your message has not yet been delivered to one or more of its recipients. The mail system ' +
        'will keep trying; you do not need to send it again.',
    );
  }
  if (has('delivered') || has('relayed'))
    paragraphs.push('Your message was delivered or passed on as listed below.');
  paragraphs.push(
    returnFull
      ? 'Your message is attached below.'
      : fullClass === 'binary'
        ? 'Your message cannot be returned in full; its headers are attached below.'
        : 'The headers of your message are attached below.',
  );
  let text = paragraphs.map((p) => wrap(p, '', '')).join(CRLF);
  for (const r of recipients) {
    const what = describeStatus(r.status);
    text +=
      CRLF + wrap(`<${r.address}>: ${ACTION_TEXT[r.action]} (status ${r.status}${what ? `, ${what}` : ''})`);
    if (r.diagnostic) {
      text += wrap(
        r.remoteMta ? `${r.remoteMta} said: ${r.diagnostic}` : `Reason: ${r.diagnostic}`,
        '    ',
        '      ',
      );
    }
    if (r.action === 'delayed' && r.willRetryUntil) {
      text += wrap(`Will retry until ${rfc5322Date(r.willRetryUntil)}.`, '    ');
    }
  }

  // 2. The machine-readable report.
  let report = '';
  if (input.envid !== undefined)
    report += field('Original-Envelope-Id', oneLine(input.envid, { ascii: true }));
  report += field('Reporting-MTA', `dns; ${host}`);
  report += field('Arrival-Date', rfc5322Date(input.arrivalDate));
  report += field('X-Cartero-Queue-ID', queueId);
  for (const r of recipients) {
    report += CRLF;
    if (r.orcpt !== undefined && oneLine(r.orcpt))
      report += field('Original-Recipient', originalRecipient(r.orcpt));
    report += field('Final-Recipient', typedAddress('rfc822', r.address));
    report += field('Action', r.action);
    report += field('Status', r.status);
    if (r.remoteMta) report += field('Remote-MTA', `dns; ${r.remoteMta}`);
    if (r.diagnostic) report += field('Diagnostic-Code', diagnosticCode(r.diagnostic));
    if (r.lastAttemptAt) report += field('Last-Attempt-Date', rfc5322Date(r.lastAttemptAt));
    if (r.action === 'delayed' && r.willRetryUntil)
      report += field('Will-Retry-Until', rfc5322Date(r.willRetryUntil));
  }

  // 3. The original, whole or its header section.
  const parts = [
    textPart('text/plain; charset=utf-8', 'Notification', Buffer.from(text, 'utf8')),
    {
      head:
        field('Content-Description', 'Delivery report') + field('Content-Type', 'message/delivery-status'),
      body: Buffer.from(report, 'latin1'),
    },
    returnFull
      ? {
          head:
            field('Content-Description', 'Undelivered Message') +
            field('Content-Type', 'message/rfc822') +
            field('Content-Transfer-Encoding', fullClass!),
          body: original,
        }
      : textPart(
          'text/rfc822-headers',
          has('failed') ? 'Undelivered Message Headers' : 'Message Headers',
          headerSection(original),
        ),
  ];

  // Deterministic, and unguessable by whoever wrote the original (it is part of the hash input).
  const hash = createHash('sha256');
  hash.update(`${input.queueId}\0${input.now.getTime()}\0${host}\0`);
  for (const r of recipients) hash.update(`${r.address}\0${r.action}\0${r.status}\0`);
  hash.update(original);
  const digest = hash.digest('hex');
  let boundary = `=_cartero_${digest.slice(0, 24)}`;
  for (let n = 1; parts.some((p) => p.body.includes(`--${boundary}`)); n++)
    boundary = `=_cartero_${digest.slice(0, 24)}_${n}`;

  const stamp = input.now.toISOString().replace(/\D/g, '').slice(0, 14);
  const idLeft = `${stamp}.${queueId.replace(/[^A-Za-z0-9_-]/g, '') || 'dsn'}.${digest.slice(24, 36)}`;
  const subject = has('failed')
    ? 'Undelivered Mail Returned to Sender'
    : has('delayed')
      ? 'Delayed Mail (still being retried)'
      : 'Successful Mail Delivery Report';
  const head =
    field('From', `Mail Delivery System <MAILER-DAEMON@${host}>`) +
    field('To', `<${sender}>`) +
    field('Subject', subject) +
    field('Date', rfc5322Date(input.now)) +
    field(
      'Message-ID',
      `<${idLeft}@${input.messageIdDomain.replace(/[^A-Za-z0-9.-]/g, '') || 'localhost'}>`,
    ) +
    field('Auto-Submitted', 'auto-replied') +
    field('MIME-Version', '1.0') +
    field('Content-Type', `multipart/report; report-type=delivery-status; boundary="${boundary}"`) +
    CRLF +
    'This is a MIME-encapsulated message.' +
    CRLF;

  const chunks: Buffer[] = [Buffer.from(head, 'utf8')];
  for (const p of parts)
    chunks.push(Buffer.from(`${CRLF}--${boundary}${CRLF}${p.head}${CRLF}`, 'latin1'), p.body);
  chunks.push(Buffer.from(`${CRLF}--${boundary}--${CRLF}`, 'latin1'));
  return Buffer.concat(chunks);
}
