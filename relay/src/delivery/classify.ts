/**
 * What a delivery attempt's result means for one recipient: delivered, deferred (try again later)
 * or bounced (give up and tell the sender), and the RFC 3463 status code that goes into the DSN.
 */

/** The fate of one recipient after one delivery attempt. */
export type DeliveryOutcome = 'delivered' | 'deferred' | 'bounced';

/**
 * The result of a delivery attempt as the SMTP client reports it: the server's reply, or an error
 * with no reply. With nodemailer: `code` is `err.responseCode`, `errCode` is `err.code`, and
 * `message` is `err.response` (the reply text) or, without one, `err.message`.
 */
export interface ReplyInfo {
  /** Basic SMTP reply code, e.g. 550. */
  code?: number;
  /** Enhanced status code from the reply (RFC 3463), e.g. `5.1.1`. */
  enhanced?: string;
  /** nodemailer error code: ECONNECTION, ETIMEDOUT, EDNS, ESOCKET, ETLS, EPROTOCOL, EENVELOPE, EMESSAGE, EAUTH... */
  errCode?: string;
  /** Reply text such as `550 5.1.1 No such user`; a code and enhanced code leading it are used when not given apart. */
  message?: string;
  /** Whether the SMTP session had been set up when a connection-level error struck (4.4.2) or not (4.4.1). */
  connected?: boolean;
}

/** Why a domain cannot be delivered to at all: NXDOMAIN, a null MX (RFC 7505), or no usable route. */
export type UnroutableReason = 'nxdomain' | 'null-mx' | 'no-route';

/** The cause of a status: an attempt's result, the message expiring in the queue, or an unroutable domain. */
export type StatusCause = ReplyInfo | { expired: true } | { unroutable: UnroutableReason };

const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})$/;
const LEADING_REPLY = /^([1-5]\d\d)(?:[ -]([245]\.\d{1,3}\.\d{1,3})(?=\s|$))?/;
/** Errors that show the remote host never answered (connect-time errno, connect or greeting timeout). */
const NO_ANSWER =
  /\b(ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|EHOSTDOWN|ENETDOWN|EADDRNOTAVAIL|Connection timeout|Greeting never received)\b/i;
/** Errors that show an established connection broke (nodemailer's bare `Timeout` is the idle-socket one). */
const DROPPED = /\b(ECONNRESET|EPIPE|closed unexpectedly|socket hang up)\b|^Timeout$/i;
const CONNECTION_ERRORS = new Set(['ECONNECTION', 'ETIMEDOUT', 'ESOCKET']);

/** The basic and enhanced codes of a reply, taking them from the leading reply text when not given apart. */
function replyCodes(input: ReplyInfo): { code?: number; enhanced?: string } {
  const lead = input.message ? LEADING_REPLY.exec(input.message.trimStart()) : null;
  const code = Number.isInteger(input.code) ? input.code : lead ? Number(lead[1]) : undefined;
  const given = input.enhanced?.trim();
  const enhanced = given && ENHANCED.test(given) ? given : lead?.[2];
  return { code, enhanced };
}

function outcomeOfClass(cls: string | number): DeliveryOutcome {
  return String(cls) === '2' ? 'delivered' : String(cls) === '5' ? 'bounced' : 'deferred';
}

/**
 * Classifies an attempt's result. The basic reply code decides: 2xx delivered, 4xx deferred,
 * 5xx bounced (anything else deferred); without one, the enhanced code's class decides. Without
 * either, only local permanent refusals (EENVELOPE: an address nodemailer will not send to;
 * EMESSAGE: e.g. larger than the server's SIZE) bounce; connection, timeout, socket, TLS, DNS,
 * protocol and unknown errors are deferred. Authentication failures (EAUTH) are always deferred:
 * they are our configuration's fault, and bouncing every queued message for them would be wrong.
 */
export function classifyReply(input: ReplyInfo): DeliveryOutcome {
  if (input.errCode === 'EAUTH') return 'deferred';
  const { code, enhanced } = replyCodes(input);
  if (code !== undefined) {
    if (code >= 200 && code < 300) return 'delivered';
    if (code >= 500 && code < 600) return 'bounced';
    return 'deferred';
  }
  if (enhanced) return outcomeOfClass(enhanced[0]);
  if (input.errCode === 'EENVELOPE' || input.errCode === 'EMESSAGE') return 'bounced';
  return 'deferred';
}

/** The status for an error without a reply, by class (4 or 5). */
function errorStatus(input: ReplyInfo, cls: string): string {
  const { errCode, message = '', connected } = input;
  if (errCode !== undefined && CONNECTION_ERRORS.has(errCode)) {
    let neverAnswered = errCode !== 'ESOCKET';
    if (connected !== undefined) neverAnswered = !connected;
    else if (NO_ANSWER.test(message)) neverAnswered = true;
    else if (DROPPED.test(message)) neverAnswered = false;
    return neverAnswered ? '4.4.1' : '4.4.2';
  }
  switch (errCode) {
    case 'EDNS':
      return '4.4.3';
    case 'ETLS':
      return '4.7.5';
    case 'EPROTOCOL':
      return '4.5.0';
    case 'EAUTH':
      return '4.7.0';
    case 'EENVELOPE':
      if (/invalid recipient/i.test(message)) return '5.1.3';
      return /invalid sender/i.test(message) ? '5.1.7' : '5.0.0';
    case 'EMESSAGE':
      return /size|larger/i.test(message) ? '5.3.4' : '5.0.0';
    default:
      return `${cls}.0.0`;
  }
}

/**
 * The RFC 3463 status to report for a recipient. For a reply: the server's enhanced code, its class
 * made to agree with the outcome (550 with 4.2.2 reports 5.2.2); else `X.0.0` by outcome (2, 4
 * or 5). For errors without a reply: 4.4.1 no answer from host, 4.4.2 bad connection, 4.4.3 DNS
 * failure, 4.7.5 TLS failure, 4.5.0 protocol error, 4.7.0 authentication failure. An expired
 * message reports 4.4.7 (with `Action: failed`); an unroutable domain 5.1.2 (NXDOMAIN), 5.1.10
 * (null MX, RFC 7505) or 5.4.4 (no usable route).
 */
export function statusFor(cause: StatusCause): string {
  if ('expired' in cause) return '4.4.7';
  if ('unroutable' in cause) {
    return cause.unroutable === 'nxdomain' ? '5.1.2' : cause.unroutable === 'null-mx' ? '5.1.10' : '5.4.4';
  }
  const outcome = classifyReply(cause);
  const cls = outcome === 'delivered' ? '2' : outcome === 'deferred' ? '4' : '5';
  const { code, enhanced } = replyCodes(cause);
  if (enhanced) return `${cls}${enhanced.slice(1)}`;
  if (cause.errCode === 'EAUTH') return '4.7.0';
  if (code !== undefined) return `${cls}.0.0`;
  return errorStatus(cause, cls);
}

const SUBJECT_DETAIL: Record<string, string> = {
  '0.0': 'other or undefined status',
  '1.0': 'other address status',
  '1.1': 'bad destination mailbox address',
  '1.2': 'bad destination system address',
  '1.3': 'bad destination mailbox address syntax',
  '1.6': 'destination mailbox has moved',
  '1.7': 'bad sender mailbox address syntax',
  '1.10': 'recipient address has null MX',
  '2.0': 'other or undefined mailbox status',
  '2.1': 'mailbox disabled, not accepting messages',
  '2.2': 'mailbox full',
  '2.3': 'message length exceeds administrative limit',
  '3.0': 'other or undefined mail system status',
  '3.4': 'message too big for system',
  '4.0': 'other or undefined network or routing status',
  '4.1': 'no answer from host',
  '4.2': 'bad connection',
  '4.3': 'directory server failure',
  '4.4': 'unable to route',
  '4.6': 'routing loop detected',
  '4.7': 'delivery time expired',
  '5.0': 'other or undefined protocol status',
  '6.0': 'other or undefined media error',
  '7.0': 'other or undefined security status',
  '7.1': 'delivery not authorized, message refused',
  '7.5': 'cryptographic failure',
};

/** A short human description of a status code (`5.1.1` -> `bad destination mailbox address`), or `''`. */
export function describeStatus(status: string): string {
  const m = ENHANCED.exec(status);
  return m ? (SUBJECT_DETAIL[`${m[2]}.${m[3]}`] ?? '') : '';
}

/** Whether `status` is a well-formed RFC 3463 status code (class 2, 4 or 5). */
export function isStatusCode(status: string): boolean {
  return ENHANCED.test(status);
}
