/**
 * The relay's errors, each with a stable `code`. Errors that reach an SMTP client carry the
 * reply code and the enhanced status code (RFC 3463); smtp-server turns `responseCode` into the reply.
 */
export class CarteroError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CarteroError';
    this.code = code;
  }
}

/** An error whose message becomes an SMTP reply: `responseCode` + enhanced status + text. */
export class SmtpReplyError extends CarteroError {
  readonly responseCode: number;
  readonly enhanced: string;
  constructor(code: string, responseCode: number, enhanced: string, text: string) {
    super(code, `${enhanced} ${text}`);
    this.name = 'SmtpReplyError';
    this.responseCode = responseCode;
    this.enhanced = enhanced;
  }
}

export class ConfigError extends CarteroError {
  /** JSON-pointer-like path of the bad field, e.g. `/listeners/0/port`. */
  readonly field: string;
  /** The message is one line whatever the config holds: a key with a newline, a reason over lines. */
  constructor(field: string, reason: string) {
    super('ERR_CONFIG', `${printable(field || '/', 200)}: ${reason.replace(/\s*[\r\n]+\s*/g, ' ').trim()}`);
    this.name = 'ConfigError';
    this.field = field;
  }
}

/** `text` with control characters escaped (a newline as `\u000a`), cut to `max` characters. */
function printable(text: string, max: number): string {
  const s = text.replace(
    // eslint-disable-next-line no-control-regex -- control characters are what this escapes
    /[\u0000-\u001f\u007f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/** The spool refused a write but nothing was lost: the client should retry later. */
export class SpoolBackpressureError extends SmtpReplyError {
  constructor(text: string) {
    super('ERR_SPOOL_FULL', 452, '4.3.1', text);
  }
}

/** The spool could not write (I/O error): the client should retry later. */
export class SpoolUnhealthyError extends SmtpReplyError {
  constructor(text: string, cause?: unknown) {
    super('ERR_SPOOL_IO', 451, '4.3.0', text);
    if (cause !== undefined) (this as { cause?: unknown }).cause = cause;
  }
}

export const reply = {
  relayDenied: (rcpt: string) =>
    new SmtpReplyError('ERR_RELAY_DENIED', 550, '5.7.1', `<${rcpt}>: Relay access denied`),
  authRequired: () => new SmtpReplyError('ERR_AUTH_REQUIRED', 530, '5.7.0', 'Authentication required'),
  badAddress: (addr: string, why: string) =>
    new SmtpReplyError('ERR_BAD_ADDRESS', 553, '5.1.3', `<${addr}>: ${why}`),
  badSender: (addr: string, why: string) =>
    new SmtpReplyError('ERR_BAD_SENDER', 553, '5.1.7', `<${addr}>: ${why}`),
  tooManyRecipients: (max: number) =>
    new SmtpReplyError(
      'ERR_TOO_MANY_RCPTS',
      452,
      '4.5.3',
      `Too many recipients (at most ${max} per message)`,
    ),
  tooBig: (max: number) =>
    new SmtpReplyError('ERR_TOO_BIG', 552, '5.3.4', `Message too big (at most ${max} bytes)`),
  headerLineTooLong: (max: number) =>
    new SmtpReplyError(
      'ERR_HEADER_LINE_TOO_LONG',
      552,
      '5.6.0',
      `Header line too long (at most ${max} octets)`,
    ),
  headerTooBig: (max: number) =>
    new SmtpReplyError('ERR_HEADER_TOO_BIG', 552, '5.6.0', `Header section too big (at most ${max} bytes)`),
  looped: (hops: number) =>
    new SmtpReplyError('ERR_LOOP', 554, '5.4.6', `Mail loop detected (${hops} Received headers)`),
  /** Mail of a tenant with `dkim.unmatched: refuse` that none of its keys can sign. */
  unsigned: (why: string) => new SmtpReplyError('ERR_DKIM_UNMATCHED', 550, '5.7.1', why),
  /** A message of a tenant with `lint.policy: enforce` that breaks a bulk-sender lint rule (ADR 014). */
  lint: (enhanced: string, text: string) => new SmtpReplyError('ERR_LINT', 550, enhanced, text),
  shuttingDown: () =>
    new SmtpReplyError('ERR_SHUTDOWN', 421, '4.3.2', 'Service shutting down, try again later'),
};
