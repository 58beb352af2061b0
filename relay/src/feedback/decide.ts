/**
 * The feedback listener's decisions, pure (docs/adr/016-feedback-loop.md): which RCPT it takes (a valid
 * return-path token of a bounce domain, or a tenant's feedback address; everything else is not a relay
 * path), and what a received report changes for each address it was sent to.
 */
import type { RelayConfig } from '../config.js';
import { parseToken, splitLocalPart, tokenRecipient } from './token.js';
import type { Report } from './report.js';
import { messageKey } from './sent-entry.js';

export type Target =
  | { kind: 'token'; tenant: string; queueId: string; recipientTag: Buffer }
  | { kind: 'feedback'; tenant: string };

export type RcptVerdict =
  | { ok: true; target: Target }
  | { ok: false; reason: 'foreign' | 'malformed' | 'forged' | 'expired' | 'version' | 'no-key' };

type Cfg = Pick<RelayConfig, 'tenants' | 'feedback'>;

/** What the listener does with `RCPT TO:<address>`. */
export function judgeRcpt(cfg: Cfg, address: string, now: number): RcptVerdict {
  const at = address.lastIndexOf('@');
  if (at <= 0) return { ok: false, reason: 'foreign' };
  const lower = address.toLowerCase();
  const domain = lower.slice(at + 1);
  for (const t of cfg.tenants.values())
    if (t.feedbackAddress && t.feedbackAddress === lower)
      return { ok: true, target: { kind: 'feedback', tenant: t.name } };
  const owner = [...cfg.tenants.values()].find((t) => t.returnPath?.domain === domain);
  if (!owner?.returnPath) return { ok: false, reason: 'foreign' };
  const token = splitLocalPart(address.slice(0, at), owner.returnPath.prefix);
  if (token === undefined) return { ok: false, reason: 'foreign' };
  if (!cfg.feedback.key) return { ok: false, reason: 'no-key' };
  // only the domain's own tenant: another tenant's token under this domain does not verify
  const p = parseToken(cfg.feedback.key, token, [owner.name], now, cfg.feedback.tokenTtlDays);
  if (!p.ok) return { ok: false, reason: p.reason };
  return {
    ok: true,
    target: { kind: 'token', tenant: p.tenant, queueId: p.queueId, recipientTag: p.recipientTag },
  };
}

export type Decision =
  | {
      result: 'bounce';
      tenant: string;
      queueId?: string;
      recipient: string;
      status: string;
      diagnostic?: string;
    }
  | {
      result: 'complaint';
      tenant: string;
      queueId?: string;
      recipient: string;
      feedbackType: string;
      reporter?: string;
    }
  | { result: 'ignored'; tenant: string; reason: string }
  | { result: 'unmatched'; tenant?: string; reason: string };

/**
 * What the sent-message index (and the fleet) knew of the returned message's Message-ID, for a report
 * without a token (sent-index.ts, peer-lookup.ts): the processor looks it up, decide() only reads it.
 */
export type SentLookup =
  | { found: true; tenant: string; queueId: string; recipients: string[]; count: number }
  | { found: false; reason: string };

/** A recipient a provider hid (Yahoo's CFL drops it; others write `redacted`): not an address to check. */
export function redacted(address: string): boolean {
  const local = address.slice(0, address.lastIndexOf('@'));
  return /^(redacted|x+|\*+|hidden|removed)$/i.test(local);
}

/**
 * The token a report sent to the feedback address `target` carries in its returned message's Return-Path,
 * when it is a valid one of a bounce domain: decide() then reads the report as sent to that token.
 */
function returnPathToken(
  cfg: Cfg,
  report: Report,
  now: number,
): Extract<Target, { kind: 'token' }> | undefined {
  const rp = report.original.returnPath;
  const v = rp ? judgeRcpt(cfg, rp, now) : undefined;
  return v?.ok && v.target.kind === 'token' ? v.target : undefined;
}

/**
 * The Message-ID key the processor must look up before decide() for `report` received for `target`: only
 * for a feedback address whose report carries no token in its Return-Path, and names a Message-ID.
 */
export function lookupKey(cfg: Cfg, report: Report, target: Target, now: number): string | undefined {
  if (target.kind !== 'feedback' || report.kind === 'unknown') return undefined;
  if (returnPathToken(cfg, report, now)) return undefined;
  return messageKey(report.original.messageId);
}

/**
 * What `report`, received for `target`, changes. A token names one recipient: only that recipient is
 * taken, from the report's fields or else the returned message's To. A report sent to a feedback address
 * is read through the token in the returned message's Return-Path when it has one, else through `sent`,
 * the message its Message-ID names (docs/adr/020-sent-message-index.md): of the same tenant, and only a
 * recipient of that message is taken; when the report names none (or only redacted ones) and the message
 * had exactly one recipient, that one. Anything else is unmatched: an address that was not a recipient is
 * never suppressed. `key` checks recipient tags.
 */
export function decide(cfg: Cfg, report: Report, target: Target, now: number, sent?: SentLookup): Decision {
  const key = cfg.feedback.key;
  const tenant = target.tenant;
  if (report.kind === 'unknown') return { result: 'unmatched', tenant, reason: 'not a report' };
  let mine: (r: string) => boolean;
  let queueId: string | undefined;
  let sole: string | undefined;
  let whose = 'the token';
  const t = target.kind === 'token' ? target : returnPathToken(cfg, report, now);
  if (t) {
    if (t.tenant !== tenant) return { result: 'unmatched', tenant, reason: 'token of another tenant' };
    mine = (r) => !!key && tokenRecipient(key, t.recipientTag, r);
    queueId = t.queueId;
  } else if (!report.original.messageId) {
    return { result: 'unmatched', tenant, reason: 'no token and no Message-ID' };
  } else if (!sent) {
    return { result: 'unmatched', tenant, reason: 'no token; the Message-ID was not looked up' };
  } else if (!sent.found) {
    return { result: 'unmatched', tenant, reason: `no token; ${sent.reason}` };
  } else if (sent.tenant !== tenant) {
    return { result: 'unmatched', tenant, reason: 'the Message-ID names a message of another tenant' };
  } else {
    const rcpts = new Set(sent.recipients);
    mine = (r) => rcpts.has(r);
    queueId = sent.queueId;
    sole = sent.count === 1 ? sent.recipients[0] : undefined;
    whose = 'the message';
  }
  const ids = queueId ? { queueId } : {};
  /** The first named address that is ours; or the message's only recipient when none is named in clear. */
  const pick = (named: string[]) => named.find(mine) ?? (named.every(redacted) ? sole : undefined);
  if (report.kind === 'arf') {
    const rcpt = pick([...report.recipients, ...report.original.to]);
    if (!rcpt) return { result: 'unmatched', tenant, reason: `no recipient of ${whose}` };
    return {
      result: 'complaint',
      tenant,
      ...ids,
      recipient: rcpt,
      feedbackType: report.feedbackType,
      ...(report.reporter ? { reporter: report.reporter } : {}),
    };
  }
  let r = report.recipients.find((x) => mine(x.recipient));
  if (!r && report.rule) {
    // a non-standard bounce that names no address we can check: the returned message's To
    const to = pick([...report.recipients.map((x) => x.recipient), ...report.original.to]);
    if (to) r = { recipient: to, action: 'failed', status: report.recipients[0]?.status ?? '5.0.0' };
  }
  if (!r) return { result: 'unmatched', tenant, reason: `no recipient of ${whose}` };
  if (r.action !== 'failed' || !r.status.startsWith('5.'))
    return { result: 'ignored', tenant, reason: `${r.action || 'no action'} ${r.status}`.trim() };
  return {
    result: 'bounce',
    tenant,
    ...ids,
    recipient: r.recipient,
    status: r.status,
    ...(r.diagnostic ? { diagnostic: r.diagnostic } : {}),
  };
}
