/**
 * Asking the fleet's other relays for a sent message (docs/adr/020-sent-message-index.md): a report lands
 * on whichever pod the feedback Service picked, the message may have left from another. The relays are
 * the addresses of feedback.peerLookup.host (the StatefulSet's headless Service), resolved through the
 * relay's own resolver (dns.servers); each is asked GET /feedback/sent on feedback.peerLookup.port with
 * this relay's admin token (the fleet shares it). Bounded: at most maxPeers relays, each within timeout,
 * each answer at most MAX_ANSWER_BYTES, at most MAX_FLEET_LOOKUPS lookups at once and MAX_FLEET_WAITING
 * waiting (more: an error, the report ends unmatched); a hit of the asked
 * tenant ends the others at once. The endpoint
 * answers from its own index only, so a lookup never fans out further (this relay may ask itself too:
 * one cheap extra read, which keeps the pod's own address out of the config).
 */
import net from 'node:net';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import type { RelayConfig } from '../config.js';
import type { FeedbackSentResponse } from '../contract/admin-api.js';
import type { IdentityResolver } from '../identity/resolver.js';
import { MAX_RECIPIENTS, messageKey, type SentEntry } from './sent-entry.js';

export const MAX_ANSWER_BYTES = 256 * 1024;
/** Fleet lookups running at once (each asks up to maxPeers relays); more wait their turn. */
export const MAX_FLEET_LOOKUPS = 8;
export const MAX_FLEET_WAITING = 64;

export type FleetLookup =
  | { result: 'hit'; entry: SentEntry; peer: string }
  | { result: 'miss'; asked: number; failed: number }
  | { result: 'off' }
  | { result: 'error'; error: string };

export function peerLookupMetrics(r: Registry): Counter<'result'> {
  return new Counter({
    name: 'cartero_feedback_peer_lookups_total',
    help: 'Relays asked for a sent message this relay did not accept, per answer: hit, miss, failed (no answer in time, refused, or not understood), dns (the name did not resolve).',
    labelNames: ['result'],
    registers: [r],
  });
}

export interface PeerLookupDeps {
  cfg: () => RelayConfig;
  resolver: () => IdentityResolver;
  metrics: Counter<'result'>;
  log: Logger;
}

/** An answer's match, checked field by field; undefined when the answer is not one. */
export function readAnswer(body: unknown): SentEntry | null | undefined {
  if (typeof body !== 'object' || body === null || !('match' in body)) return undefined;
  const m = (body as FeedbackSentResponse).match as unknown;
  if (m === null) return null;
  if (typeof m !== 'object') return undefined;
  const e = m as Record<string, unknown>;
  if (typeof e.tenant !== 'string' || typeof e.queueId !== 'string' || typeof e.day !== 'string')
    return undefined;
  if (typeof e.messageId !== 'string' || messageKey(`<${e.messageId}>`) !== e.messageId) return undefined;
  if (!Array.isArray(e.recipients) || !e.recipients.every((r) => typeof r === 'string')) return undefined;
  const recipients = (e.recipients as string[]).slice(0, MAX_RECIPIENTS).map((r) => r.toLowerCase());
  const count = typeof e.count === 'number' && e.count >= recipients.length ? e.count : recipients.length;
  return { messageId: e.messageId, tenant: e.tenant, queueId: e.queueId, recipients, count, day: e.day };
}

export class PeerLookup {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly d: PeerLookupDeps) {}

  /** The fleet's entry for `key` (a messageKey), preferring one of `tenant`. */
  async find(key: string, tenant: string): Promise<FleetLookup> {
    if (!this.d.cfg().feedback.peerLookup) return { result: 'off' };
    // a report's processing outlives its connection (cut at feedback.listener.timeout): the waiting are
    // bounded here, not by the listener's connections
    if (this.running >= MAX_FLEET_LOOKUPS && this.waiting.length >= MAX_FLEET_WAITING)
      return { result: 'error', error: 'too many fleet lookups waiting' };
    while (this.running >= MAX_FLEET_LOOKUPS) await new Promise<void>((r) => this.waiting.push(r));
    this.running++;
    try {
      return await this.ask(key, tenant);
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }

  private async ask(key: string, tenant: string): Promise<FleetLookup> {
    const cfg = this.d.cfg();
    const pl = cfg.feedback.peerLookup;
    if (!pl) return { result: 'off' };
    let peers: string[];
    if (net.isIP(pl.host)) peers = [pl.host];
    else {
      const r = await this.d.resolver().addresses(pl.host);
      if (!r.ok) {
        this.d.metrics.inc({ result: 'dns' });
        return { result: 'error', error: `${pl.host} did not resolve (${r.code})` };
      }
      peers = r.records;
    }
    peers = [...new Set(peers)].slice(0, pl.maxPeers);
    const stop = new AbortController();
    const token = cfg.admin.token?.toString('utf8');
    let failed = 0;
    let other: { entry: SentEntry; peer: string } | undefined;
    let mine: { entry: SentEntry; peer: string } | undefined;
    await Promise.all(
      peers.map(async (ip) => {
        const host = net.isIPv6(ip) ? `[${ip}]` : ip;
        const url = `http://${host}:${pl.port}/feedback/sent?messageId=${encodeURIComponent(key)}&tenant=${encodeURIComponent(tenant)}`;
        try {
          const entry = await askOne(
            url,
            token,
            AbortSignal.any([stop.signal, AbortSignal.timeout(pl.timeoutMs)]),
          );
          this.d.metrics.inc({ result: entry ? 'hit' : 'miss' });
          if (!entry || entry.messageId !== key) return;
          if (entry.tenant === tenant) {
            mine ??= { entry, peer: ip };
            stop.abort();
          } else other ??= { entry, peer: ip };
        } catch (e) {
          if (stop.signal.aborted) return; // another relay had it
          failed++;
          this.d.metrics.inc({ result: 'failed' });
          this.d.log.info(
            { event: 'feedback.peer-lookup-failed', peer: ip, err: (e as Error).message },
            'a relay of the fleet did not answer a sent-message lookup',
          );
        }
      }),
    );
    const hit = mine ?? other;
    if (hit) return { result: 'hit', entry: hit.entry, peer: hit.peer };
    return { result: 'miss', asked: peers.length, failed };
  }
}

async function askOne(
  url: string,
  token: string | undefined,
  signal: AbortSignal,
): Promise<SentEntry | null> {
  const r = await fetch(url, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    signal,
    redirect: 'error',
  });
  if (r.status !== 200) {
    await r.body?.cancel();
    throw new Error(`HTTP ${r.status}`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const c of r.body as unknown as AsyncIterable<Uint8Array>) {
    size += c.length;
    if (size > MAX_ANSWER_BYTES) throw new Error(`answer over ${MAX_ANSWER_BYTES} bytes`);
    chunks.push(c);
  }
  const m = readAnswer(JSON.parse(Buffer.concat(chunks).toString('utf8')));
  if (m === undefined) throw new Error('not a sent-message answer');
  return m;
}
