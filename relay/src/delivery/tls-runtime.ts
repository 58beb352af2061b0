/**
 * Outbound TLS policy at run time: the MTA-STS cache and fetcher built from the config in force (rebuilt
 * when the DNS, CA or MTA-STS settings change on reload), the decision per destination (tls-policy.ts),
 * the trust anchors for verified sessions, and the metrics (mta-sts/metrics.ts).
 */
import { createHash } from 'node:crypto';
import tls from 'node:tls';
import { domainToASCII } from 'node:url';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { RelayConfig } from '../config.js';
import type { OutboundTlsConfig } from '../contract/config-types.js';
import { StsCache } from '../mta-sts/cache.js';
import { isIpLiteral, StsFetcher } from '../mta-sts/fetch.js';
import { registerTlsPolicyMetrics, type TlsPolicyMetrics, type TlsResult } from '../mta-sts/metrics.js';
import type { StsPolicy } from '../mta-sts/policy.js';
import { decideTls, matchDomainPolicy, type TlsDecision } from './tls-policy.js';

export const DEFAULT_OUTBOUND_TLS: OutboundTlsConfig = {
  level: 'opportunistic',
  policies: [],
  mtaSts: { enabled: true, fetchTimeoutMs: 10_000, recheckMs: 300_000, cacheMaxEntries: 10_000, port: 443 },
};

export interface MxTlsPlan extends TlsDecision {
  /** The MTA-STS policy that applied, if any. */
  sts?: StsPolicy;
}

export class OutboundTlsRuntime {
  readonly metrics: TlsPolicyMetrics;
  private sts?: StsCache;
  private stsKey = '';
  private caKey = '';
  private caPem?: Buffer;
  private caList?: string[];

  constructor(
    private readonly o: { cfg: () => RelayConfig; log: Logger; registry: Registry; now: () => number },
  ) {
    this.metrics = registerTlsPolicyMetrics(o.registry, () =>
      this.sts ? { size: this.sts.size, modes: this.sts.modes() } : undefined,
    );
  }

  private get conf(): OutboundTlsConfig {
    return this.o.cfg().outboundTls ?? DEFAULT_OUTBOUND_TLS;
  }

  /**
   * The trust anchors for a verified session or a policy fetch: undefined (Node's system CAs) without
   * outboundTls.caFile, else the system CAs plus its certificates (Node's `ca` replaces the defaults).
   * "System CAs" is Node's bundled store (tls.rootCertificates); NODE_EXTRA_CA_CERTS extends the default
   * but is not in that list, so with a caFile its certificates belong in the file.
   */
  ca(): string[] | undefined {
    const pem = this.conf.ca;
    if (pem !== this.caPem) {
      // a reload gives a new Buffer: compare contents, so an unchanged file keeps the MTA-STS cache
      const key = pem ? createHash('sha256').update(pem).digest('hex') : '';
      this.caPem = pem;
      if (key !== this.caKey) {
        this.caKey = key;
        this.caList = pem ? [...tls.rootCertificates, pem.toString('utf8')] : undefined;
      }
    }
    return this.caList;
  }

  /** The MTA-STS cache for the settings in force, rebuilt (empty) when they changed. */
  private stsCache(): StsCache | undefined {
    const cfg = this.o.cfg();
    const m = this.conf.mtaSts;
    if (!m.enabled) {
      this.sts = undefined;
      this.stsKey = '';
      return undefined;
    }
    const ca = this.ca();
    const key = JSON.stringify([
      cfg.dns.servers,
      cfg.dns.timeoutMs,
      cfg.dns.allowPrivateTargets.map(String),
      m,
      this.caKey,
    ]);
    if (!this.sts || key !== this.stsKey) {
      const fetcher = new StsFetcher({
        servers: cfg.dns.servers,
        dnsTimeoutMs: cfg.dns.timeoutMs,
        fetchTimeoutMs: m.fetchTimeoutMs,
        port: m.port,
        allowPrivateTargets: cfg.dns.allowPrivateTargets,
        ...(ca ? { ca } : {}),
      });
      this.stsKey = key;
      this.sts = new StsCache({
        txt: (name) => fetcher.txt(name),
        fetch: (domain) => fetcher.fetch(domain),
        now: this.o.now,
        maxEntries: m.cacheMaxEntries,
        txtRecheckMs: m.recheckMs,
        onResult: (domain, result, detail) => {
          this.metrics.fetches.inc({ result });
          const level =
            result === 'fetch-error' || result === 'invalid' || result === 'txt-error' ? 'warn' : 'info';
          if (result !== 'no-record' && result !== 'unchanged')
            this.o.log[level](
              { event: 'mta-sts.policy', domain, result, detail },
              `MTA-STS policy of ${domain}: ${result}`,
            );
        },
      });
    }
    return this.sts;
  }

  /** What TLS delivery by MX to `domain` needs, and which MX hosts it may use. Never throws. */
  async forMx(domain: string): Promise<MxTlsPlan> {
    const c = this.conf;
    const dest = matchDomainPolicy(c.policies, domain)?.level;
    const name = domainToASCII(domain.toLowerCase().replace(/\.$/, ''));
    let sts: StsPolicy | undefined;
    if (name && !isIpLiteral(name) && !name.startsWith('[')) {
      try {
        sts = await this.stsCache()?.policyFor(name);
      } catch (e) {
        this.o.log.warn(
          { event: 'mta-sts.error', domain, err: (e as Error).message },
          'MTA-STS lookup failed',
        );
      }
    }
    const decision = decideTls({
      configured: c.level,
      ...(dest ? { destination: dest } : {}),
      ...(sts ? { sts } : {}),
    });
    return { ...decision, ...(sts && sts.mode !== 'none' ? { sts } : {}) };
  }

  countSession(level: string, result: TlsResult): void {
    this.metrics.tls.inc({ level, result });
  }

  violation(mode: 'enforce' | 'testing', reason: 'mx-mismatch' | 'tls'): void {
    this.metrics.violations.inc({ mode, reason });
  }
}
