/**
 * The one place that decides what a delivery result means. Every outcome of an attempt (a reply, an
 * error without a reply, a DNS answer, a local hold) goes through `classify`, which returns a decision
 * and the RFC 3463 status to report. The engine turns the decision into the recipient's fate, shaping
 * backs a destination off on `throttle`, the bounce-rate guard and the suppression list count
 * `hard-bounce` (`isHardBounce`), and the DSN writer reports the status. Pure: no I/O, no clock.
 *
 * Decisions: `deliver`; `defer` (try again later); `throttle` (defer, and back the destination off);
 * `bounce` (give up and tell the sender); `hard-bounce` (a bounce about the address itself).
 *
 * The rules, first match wins for the decision:
 *
 * | Result                                                        | Decision    | Status                 |
 * | ------------------------------------------------------------- | ----------- | ---------------------- |
 * | 2xx                                                           | deliver     | 2.x.x from reply/2.0.0 |
 * | 421, or a 4xx whose text names a rate or connection limit     | throttle    | 4.x.x from reply/4.0.0 |
 * | other 4xx (452 4.2.2 mailbox full included)                   | defer       | 4.x.x from reply/4.0.0 |
 * | 552/5xx with 5.2.2 (mailbox full)                             | defer       | 4.2.2                  |
 * | 5xx with 5.1.x, except 5.1.7/5.1.8 (the sender's address)     | hard-bounce | 5.1.x                  |
 * | other 5xx (5.7.x policy, "550 ... try again later", no code)  | bounce      | 5.x.x from reply/5.0.0 |
 * | reply code outside 200-599 (1xx, 3xx, 6xx)                    | defer       | 4.0.0                  |
 * | a 5xx during connect/greeting/EHLO/STARTTLS/AUTH (`stage`)    | defer       | class made 4           |
 * | anything from a peer relay during a drain (`peer`)            | defer       | class made 4           |
 * | EAUTH, ENOAUTH, EOAUTH2 (our credentials), even with a 5xx    | defer       | 4.x.x from reply/4.7.0 |
 * | no reply code, but an enhanced one                            | by its class, as above           |
 * | EENVELOPE without a reply (nodemailer refused the address)    | bounce/hard | 5.1.3 rcpt, 5.1.7 sender, 5.0.0 |
 * | EMESSAGE without a reply (over the server's SIZE; empty)      | bounce      | 5.3.4 size, else 5.0.0 |
 * | ECONNECTION, ETIMEDOUT, ESOCKET, EPROXY                       | defer       | 4.4.1 no answer, 4.4.2 dropped |
 * | EDNS / ETLS / EPROTOCOL / ESTREAM / ECONFIG                   | defer       | 4.4.3 / 4.7.5 / 4.5.0 / 4.3.0 / 4.3.5 |
 * | any other or unknown error (EREQUIRETLS, EABORT...)           | defer       | 4.0.0                  |
 * | DNS: NXDOMAIN or a bad name / null MX (RFC 7505)              | hard-bounce | 5.1.2 / 5.1.10         |
 * | DNS: no usable host (no address, only private ones)           | bounce      | 5.4.4                  |
 * | DNS: lookup failed (SERVFAIL, timeout)                        | defer       | 4.4.3                  |
 * | held: destination backed off, IP pool at its cap              | defer       | 4.4.5                  |
 * | local error                                                   | defer       | 4.3.0                  |
 * | expired in the queue (maxAge)                                 | bounce      | 4.4.7 (`Action: failed`) |
 *
 * The basic reply code is authoritative: the text never turns a 5xx into a deferral or a 4xx into a
 * bounce, and an enhanced code whose class contradicts it keeps its subject and detail with the basic
 * code's class (550 with 4.2.2 reports 5.2.2). The one exception is X.2.2: RFC 3463 calls a full
 * mailbox "a persistent transient failure", the owner can empty it, so it is retried until maxAge. A
 * malformed enhanced code (`5.1`, `3.1.1`, `5.1.1000`) is ignored: the reply is classified by its basic
 * code alone, so it is never a hard bounce.
 */

/** What to do with a recipient after a result (see the table above). */
export type Decision = 'deliver' | 'defer' | 'throttle' | 'bounce' | 'hard-bounce';

/** A decision and the RFC 3463 status to report with it. */
export interface Classification {
  decision: Decision;
  status: string;
}

/** Where in an SMTP session a result came: `connect` and `session` (AUTH) are about the route. */
export type Stage = 'connect' | 'session' | 'mail' | 'rcpt' | 'data';

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
  /**
   * Whether the SMTP session had been set up when a connection-level error struck (4.4.2) or not (4.4.1).
   * Defaults to true at the `session`, `mail`, `rcpt` and `data` stages, else to what the text says.
   */
  connected?: boolean;
  /** Where the result came; a refusal at `connect` or `session` defers (the route failed, not the recipient). */
  stage?: Stage;
  /** The next hop is a peer relay taking over our queue (drain): nothing it answers bounces a recipient. */
  peer?: boolean;
}

/** A DNS answer that leaves nowhere to deliver: NXDOMAIN, a null MX (RFC 7505), no usable host, or a failed lookup. */
export type DnsFailure = 'nxdomain' | 'null-mx' | 'no-route' | 'temporary';

/**
 * What to classify: an attempt's result, a DNS failure, a recipient held back before any attempt (the
 * destination backed off after a throttle, or the IP pool at its cap), a local error, or a message that
 * expired in the queue.
 */
export type Cause =
  | ReplyInfo
  | { dns: DnsFailure }
  | { held: 'backoff' | 'pool-cap' }
  | { localError: true }
  | { expired: true };

const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})$/;
const LEADING_REPLY = /^([1-5]\d\d)(?:[ -]([245]\.\d{1,3}\.\d{1,3})(?=\s|$))?/;
/** Errors that show the remote host never answered (connect-time errno, connect or greeting timeout). */
const NO_ANSWER =
  /\b(ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|EHOSTDOWN|ENETDOWN|EADDRNOTAVAIL|Connection timeout|Greeting never received)\b/i;
/** Errors that show an established connection broke (nodemailer's bare `Timeout` is the idle-socket one). */
const DROPPED = /\b(ECONNRESET|EPIPE|closed unexpectedly|socket hang up)\b|^Timeout$/i;
const CONNECTION_ERRORS = new Set(['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EPROXY']);
/** Our own credentials failed or are missing: never the recipient's fault. */
const AUTH_ERRORS = new Set(['EAUTH', 'ENOAUTH', 'EOAUTH2']);

/*
 * Throttle texts: Gmail "4.7.28 ... has been temporarily rate limited", "4.7.0 ... unusual rate";
 * Outlook "4.7.500 Server busy. Please try again later" (matched by "server busy": "try again later" alone
 * ends many replies that are not throttles), "4.7.650 ... temporarily rate limited";
 * Yahoo "[TSS04] Messages from ... temporarily deferred due to unexpected volume or user complaints";
 * generic MTAs "Too many connections", "too many concurrent SMTP connections", "slow down",
 * "throttled", "rate limit exceeded". "Too many recipients" is a per-message limit, not a throttle.
 */
const THROTTLE_TEXT = new RegExp(
  [
    String.raw`too many (?:concurrent |simultaneous |smtp |parallel )*(?:connections|sessions|messages|mails)`,
    String.raw`too much mail`,
    String.raw`slow(?:ing)? down`,
    String.raw`rate[- ]?limit`,
    String.raw`unusual rate`,
    String.raw`throttl`,
    String.raw`server (?:is )?busy`,
    String.raw`temporarily deferred`,
    String.raw`\bTSS0\d\b`,
  ].join('|'),
  'i',
);

/** The basic and enhanced codes of a reply, taking them from the leading reply text when not given apart. */
function replyCodes(input: ReplyInfo): { code?: number; enhanced?: string } {
  const lead = input.message ? LEADING_REPLY.exec(input.message.trimStart()) : null;
  const code = Number.isInteger(input.code) ? input.code : lead ? Number(lead[1]) : undefined;
  const given = input.enhanced?.trim();
  const enhanced = given && ENHANCED.test(given) ? given : lead?.[2];
  return { code, enhanced };
}

/**
 * Whether a bounce status is about the recipient's address itself (RFC 3463 X.1.x), which counts
 * against the tenant's bounce rate and suppresses the recipient. X.1.7 and X.1.8 are about the sender's
 * address, so they are soft.
 */
export function isHardBounce(status: string): boolean {
  const m = ENHANCED.exec(status);
  return !!m && m[1] === '5' && m[2] === '1' && m[3] !== '7' && m[3] !== '8';
}

/** The delivery engine's word for a decision. */
export function resultOf(decision: Decision): 'delivered' | 'deferred' | 'bounced' {
  return decision === 'deliver'
    ? 'delivered'
    : decision === 'defer' || decision === 'throttle'
      ? 'deferred'
      : 'bounced';
}

/** The decision for a result, before the status is known (see the table in the header). */
function decide(input: ReplyInfo, code: number | undefined, enhanced: string | undefined): Decision {
  let d: Decision;
  if (code !== undefined) {
    if (code >= 200 && code < 300) return 'deliver';
    if (code >= 400 && code < 500)
      d = code === 421 || THROTTLE_TEXT.test(input.message ?? '') ? 'throttle' : 'defer';
    else if (code >= 500 && code < 600) d = 'bounce';
    else d = 'defer';
  } else if (enhanced) {
    if (enhanced[0] === '2') return 'deliver';
    d = enhanced[0] === '5' ? 'bounce' : 'defer';
  } else d = input.errCode === 'EENVELOPE' || input.errCode === 'EMESSAGE' ? 'bounce' : 'defer';
  if (d !== 'bounce') return input.peer ? 'defer' : d;
  if (input.peer || (input.errCode !== undefined && AUTH_ERRORS.has(input.errCode))) return 'defer';
  if (input.stage === 'connect' || input.stage === 'session') return 'defer';
  if (enhanced?.slice(1) === '.2.2') return 'defer';
  return 'bounce';
}

/** The status for an error without a reply, by class (4 or 5). */
function errorStatus(input: ReplyInfo, cls: string): string {
  const { errCode, message = '', stage } = input;
  if (errCode !== undefined && CONNECTION_ERRORS.has(errCode)) {
    const connected = input.connected ?? (stage && stage !== 'connect' ? true : undefined);
    let neverAnswered = errCode !== 'ESOCKET';
    if (connected !== undefined) neverAnswered = !connected;
    else if (NO_ANSWER.test(message)) neverAnswered = true;
    else if (DROPPED.test(message)) neverAnswered = false;
    return neverAnswered ? '4.4.1' : '4.4.2';
  }
  if (errCode !== undefined && AUTH_ERRORS.has(errCode)) return '4.7.0';
  switch (errCode) {
    case 'EDNS':
      return '4.4.3';
    case 'ETLS':
      return '4.7.5';
    case 'EPROTOCOL':
      return '4.5.0';
    case 'ESTREAM':
      return '4.3.0';
    case 'ECONFIG':
      return '4.3.5';
    case 'EENVELOPE':
      if (cls !== '5') break;
      if (/invalid recipient/i.test(message)) return '5.1.3';
      return /invalid sender/i.test(message) ? '5.1.7' : '5.0.0';
    case 'EMESSAGE':
      if (cls !== '5') break;
      return /size|larger/i.test(message) ? '5.3.4' : '5.0.0';
  }
  return `${cls}.0.0`;
}

function classifyReply(input: ReplyInfo): Classification {
  const { code, enhanced } = replyCodes(input);
  const decision0 = decide(input, code, enhanced);
  const cls = decision0 === 'deliver' ? '2' : decision0 === 'defer' || decision0 === 'throttle' ? '4' : '5';
  let status: string;
  if (enhanced) status = `${cls}${enhanced.slice(1)}`;
  else if (code !== undefined && !(input.errCode !== undefined && AUTH_ERRORS.has(input.errCode)))
    status = `${cls}.0.0`;
  else status = errorStatus(input, cls);
  const decision = decision0 === 'bounce' && isHardBounce(status) ? 'hard-bounce' : decision0;
  return { decision, status };
}

const DNS: Record<DnsFailure, Classification> = {
  nxdomain: { decision: 'hard-bounce', status: '5.1.2' },
  'null-mx': { decision: 'hard-bounce', status: '5.1.10' },
  'no-route': { decision: 'bounce', status: '5.4.4' },
  temporary: { decision: 'defer', status: '4.4.3' },
};

/** Classifies a delivery result: what to do with the recipient, and the status to report. */
export function classify(cause: Cause): Classification {
  if ('expired' in cause) return { decision: 'bounce', status: '4.4.7' };
  if ('dns' in cause) return { ...DNS[cause.dns] };
  if ('held' in cause) return { decision: 'defer', status: '4.4.5' };
  if ('localError' in cause) return { decision: 'defer', status: '4.3.0' };
  return classifyReply(cause);
}

/** The RFC 3463 status `classify` reports for `cause`. */
export function statusFor(cause: Cause): string {
  return classify(cause).status;
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
