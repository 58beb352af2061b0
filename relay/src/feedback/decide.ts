/**
 * The feedback listener's decisions, pure (docs/adr/016-feedback-loop.md): which RCPT it takes (a valid
 * return-path token of a bounce domain, or a tenant's feedback address; everything else is not a relay
 * path), and what a received report changes for each address it was sent to.
 */
import type { RelayConfig } from '../config.js';
import { parseToken, splitLocalPart, tokenRecipient } from './token.js';
import type { Report } from './report.js';

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
 * What `report`, received for `target`, changes. A token names one recipient: only that recipient is
 * taken, from the report's fields or else the returned message's To. A feedback address takes the first
 * complained-about recipient of an ARF report (one report, one complaint); a DSN sent there is matched by
 * the token in the returned message's Return-Path, if any. `key` checks recipient tags.
 */
export function decide(cfg: Cfg, report: Report, target: Target, now: number): Decision {
  const key = cfg.feedback.key;
  let t = target;
  if (t.kind === 'feedback' && report.kind !== 'arf') {
    // a bounce sent to the feedback address: the original's Return-Path may carry our token
    const rp = report.original.returnPath;
    const v = rp ? judgeRcpt(cfg, rp, now) : undefined;
    if (!v?.ok || v.target.kind !== 'token')
      return { result: 'unmatched', tenant: t.tenant, reason: 'no token' };
    if (v.target.tenant !== t.tenant)
      return { result: 'unmatched', tenant: t.tenant, reason: 'token of another tenant' };
    t = v.target;
  }
  const mine = (r: string) => (t.kind === 'token' ? !!key && tokenRecipient(key, t.recipientTag, r) : true);
  const queueId = t.kind === 'token' ? { queueId: t.queueId } : {};
  if (report.kind === 'arf') {
    const rcpt = [...report.recipients, ...report.original.to].find(mine);
    if (!rcpt) return { result: 'unmatched', tenant: t.tenant, reason: 'no recipient of the token' };
    return {
      result: 'complaint',
      tenant: t.tenant,
      ...queueId,
      recipient: rcpt,
      feedbackType: report.feedbackType,
      ...(report.reporter ? { reporter: report.reporter } : {}),
    };
  }
  if (report.kind === 'unknown') return { result: 'unmatched', tenant: t.tenant, reason: 'not a report' };
  let r = report.recipients.find((x) => mine(x.recipient));
  if (!r && report.rule && t.kind === 'token') {
    // a non-standard bounce that names no address we can check: the returned message's To
    const to = report.original.to.find(mine);
    if (to) r = { recipient: to, action: 'failed', status: report.recipients[0]?.status ?? '5.0.0' };
  }
  if (!r) return { result: 'unmatched', tenant: t.tenant, reason: 'no recipient of the token' };
  if (r.action !== 'failed' || !r.status.startsWith('5.'))
    return { result: 'ignored', tenant: t.tenant, reason: `${r.action || 'no action'} ${r.status}`.trim() };
  return {
    result: 'bounce',
    tenant: t.tenant,
    ...queueId,
    recipient: r.recipient,
    status: r.status,
    ...(r.diagnostic ? { diagnostic: r.diagnostic } : {}),
  };
}
