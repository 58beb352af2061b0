/**
 * Metrics of outbound TLS policy and MTA-STS (docs/metrics.md, section "Outbound TLS"). Labels are
 * bounded: levels, results, modes and reasons are fixed sets; no domain or host name is a label.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { StsMode } from './policy.js';

/** How an outbound session's TLS ended up: verified, encrypted but not verified, plain text, or failed. */
export type TlsResult = 'verified' | 'unverified' | 'plaintext' | 'failed';

export interface TlsPolicyMetrics {
  tls: Counter<'level' | 'result'>;
  fetches: Counter<'result'>;
  violations: Counter<'mode' | 'reason'>;
}

export function registerTlsPolicyMetrics(
  r: Registry,
  sts: () => { size: number; modes: Map<StsMode, number> } | undefined,
): TlsPolicyMetrics {
  new Gauge({
    name: 'cartero_mta_sts_cache_entries',
    help: 'Domains in the MTA-STS cache (policies and remembered absences); bounded by outboundTls.mtaSts.cacheMaxEntries.',
    registers: [r],
    collect() {
      this.set(sts()?.size ?? 0);
    },
  });
  new Gauge({
    name: 'cartero_mta_sts_policies',
    help: 'Unexpired MTA-STS policies in the cache, by mode.',
    labelNames: ['mode'],
    registers: [r],
    collect() {
      this.reset();
      const modes = sts()?.modes ?? new Map<StsMode, number>();
      for (const mode of ['enforce', 'testing', 'none'] as const) this.set({ mode }, modes.get(mode) ?? 0);
    },
  });
  return {
    tls: new Counter({
      name: 'cartero_outbound_tls_total',
      help: 'Outbound sessions opened, by the TLS level they had to meet (route modes included) and what they got (verified, unverified, plaintext, failed).',
      labelNames: ['level', 'result'],
      registers: [r],
    }),
    fetches: new Counter({
      name: 'cartero_mta_sts_fetch_total',
      help: 'MTA-STS policy discoveries, by result (fetched, unchanged, no-record, txt-error, fetch-error, invalid, kept-cached).',
      labelNames: ['result'],
      registers: [r],
    }),
    violations: new Counter({
      name: 'cartero_mta_sts_violations_total',
      help: 'MX hosts or sessions an MTA-STS policy refused (mode enforce: not used; mode testing: used anyway), by reason (mx-mismatch, tls).',
      labelNames: ['mode', 'reason'],
      registers: [r],
    }),
  };
}
