/**
 * MTA-STS policy discovery and cache (RFC 8461 §3 and §5.1), with the DNS lookup and the HTTPS fetch
 * injected (fetch.ts gives the real ones) and a clock, so the rules are tested without sockets:
 *
 * - A cached policy is used until its max_age runs out. Its TXT id is checked again at most every
 *   `txtRecheckMs`: a new id fetches the policy again; a failed fetch keeps the cached one (§5.1).
 *   A TXT lookup that fails or finds no record also keeps it (§5.1: "the cached policy is used").
 * - Without a usable cached policy: no valid TXT record means no policy; a failed or invalid fetch means
 *   no policy either (delivery goes on as without MTA-STS, §5.1), remembered for `txtRecheckMs` so that
 *   a domain without a policy costs one TXT query per that interval, not one per message.
 * - At most `maxEntries` domains are held; the least recently stored goes first.
 * - Concurrent lookups for one domain share one discovery.
 */
import { parseStsPolicy, parseStsTxt, type StsPolicy } from './policy.js';

/** What a TXT lookup of `_mta-sts.<domain>` gave: the records, none (NXDOMAIN/NODATA), or an error. */
export type TxtAnswer =
  { kind: 'records'; records: string[][] } | { kind: 'none' } | { kind: 'error'; reason: string };

/** Results of a discovery, the label values of cartero_mta_sts_fetch_total. */
export type FetchResult =
  'fetched' | 'unchanged' | 'no-record' | 'txt-error' | 'fetch-error' | 'invalid' | 'kept-cached';

export interface StsCacheOptions {
  txt: (name: string) => Promise<TxtAnswer>;
  /** The policy file's text for `domain`; rejects on any failure (status, size, time, certificate). */
  fetch: (domain: string) => Promise<string>;
  now: () => number;
  maxEntries: number;
  /** How often the TXT id of a cached policy (or the absence of a policy) is checked again. */
  txtRecheckMs: number;
  /** Told every discovery's result (metrics, logs). */
  onResult?: (domain: string, result: FetchResult, detail?: string) => void;
}

interface Entry {
  /** Undefined: the domain has no (usable) policy. */
  policy?: StsPolicy;
  id?: string;
  /** When the policy's max_age runs out (ms); for a remembered absence, when to look again. */
  expiresAt: number;
  txtCheckedAt: number;
}

export class StsCache {
  private readonly entries = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<StsPolicy | undefined>>();

  constructor(private readonly o: StsCacheOptions) {}

  get size(): number {
    return this.entries.size;
  }

  /** Cached policies by mode (for cartero_mta_sts_policies). */
  modes(): Map<StsPolicy['mode'], number> {
    const out = new Map<StsPolicy['mode'], number>();
    const now = this.o.now();
    for (const e of this.entries.values())
      if (e.policy && e.expiresAt > now) out.set(e.policy.mode, (out.get(e.policy.mode) ?? 0) + 1);
    return out;
  }

  /** The MTA-STS policy of `domain` (lower case, ASCII), or undefined when it has none usable. */
  policyFor(domain: string): Promise<StsPolicy | undefined> {
    const e = this.entries.get(domain);
    const now = this.o.now();
    if (e && now < e.expiresAt && now - e.txtCheckedAt < this.o.txtRecheckMs)
      return Promise.resolve(e.policy);
    let p = this.inflight.get(domain);
    if (!p) {
      p = this.discover(domain, e).finally(() => this.inflight.delete(domain));
      this.inflight.set(domain, p);
    }
    return p;
  }

  clear(): void {
    this.entries.clear();
  }

  private store(domain: string, e: Entry): void {
    this.entries.delete(domain);
    while (this.entries.size >= this.o.maxEntries && this.entries.size > 0)
      this.entries.delete(this.entries.keys().next().value!);
    if (this.o.maxEntries > 0) this.entries.set(domain, e);
  }

  private async discover(domain: string, cached: Entry | undefined): Promise<StsPolicy | undefined> {
    const report = this.o.onResult ?? (() => {});
    const live = cached?.policy && this.o.now() < cached.expiresAt ? cached : undefined;
    const txt = await this.o.txt(`_mta-sts.${domain}`);
    const parsed = txt.kind === 'records' ? parseStsTxt(txt.records) : undefined;
    const checkedAt = this.o.now();
    if (!parsed?.ok) {
      const result = txt.kind === 'error' ? 'txt-error' : 'no-record';
      const detail = txt.kind === 'error' ? txt.reason : parsed && !parsed.ok ? parsed.reason : undefined;
      if (live) {
        live.txtCheckedAt = checkedAt;
        report(domain, 'kept-cached', `${result}${detail ? `: ${detail}` : ''}`);
        return live.policy;
      }
      report(domain, result, detail);
      this.store(domain, { expiresAt: checkedAt + this.o.txtRecheckMs, txtCheckedAt: checkedAt });
      return undefined;
    }
    const id = parsed.value.id;
    if (live && live.id === id) {
      live.txtCheckedAt = checkedAt;
      report(domain, 'unchanged');
      return live.policy;
    }
    let text: string;
    try {
      text = await this.o.fetch(domain);
    } catch (e) {
      return this.failed(domain, live, 'fetch-error', (e as Error).message);
    }
    const policy = parseStsPolicy(text);
    if (!policy.ok) return this.failed(domain, live, 'invalid', policy.reason);
    const at = this.o.now();
    this.store(domain, {
      policy: policy.value,
      id,
      expiresAt: at + policy.value.maxAgeS * 1000,
      txtCheckedAt: at,
    });
    report(domain, 'fetched', `mode ${policy.value.mode}, max_age ${policy.value.maxAgeS}s, id ${id}`);
    return policy.value;
  }

  private failed(
    domain: string,
    live: Entry | undefined,
    result: 'fetch-error' | 'invalid',
    reason: string,
  ): StsPolicy | undefined {
    const now = this.o.now();
    if (live) {
      live.txtCheckedAt = now;
      this.o.onResult?.(domain, 'kept-cached', `${result}: ${reason}`);
      return live.policy;
    }
    this.o.onResult?.(domain, result, reason);
    this.store(domain, { expiresAt: now + this.o.txtRecheckMs, txtCheckedAt: now });
    return undefined;
  }
}
