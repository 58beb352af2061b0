/**
 * The I/O of MTA-STS: the `_mta-sts` TXT lookup and the policy fetch from
 * `https://mta-sts.<domain>/.well-known/mta-sts.txt`, both through the relay's own DNS servers
 * (dns.servers), bounded in size (64 KiB) and time, without following redirects (RFC 8461 §3.3), with
 * the certificate checked for `mta-sts.<domain>` against the system CAs plus outboundTls.caFile, and
 * never to an address the relay would refuse as an MX target (dns.allowPrivateTargets).
 */
import { promises as dnsPromises, type LookupAddress } from 'node:dns';
import https from 'node:https';
import net from 'node:net';
import { isPrivateTarget, type Cidr } from '../dns.js';
import type { TxtAnswer } from './cache.js';
import { MAX_POLICY_BYTES } from './policy.js';

export interface StsFetchOptions {
  /** dns.servers: `ip` or `ip:port`; the system resolvers when empty. */
  servers: string[];
  dnsTimeoutMs: number;
  /** The whole fetch (address lookup, connect, TLS, response) must end within this. */
  fetchTimeoutMs: number;
  /** 443, other than in tests. */
  port: number;
  /** Trust anchors: the system CAs plus outboundTls.caFile, or undefined for the system CAs alone. */
  ca?: string[];
  allowPrivateTargets: Cidr[];
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(Object.assign(new Error(`${what} timed out`), { code: 'ETIMEOUT' })),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

/** DNS and HTTPS for MTA-STS, on the relay's resolver settings. */
export class StsFetcher {
  private readonly resolver: dnsPromises.Resolver;

  constructor(private readonly o: StsFetchOptions) {
    this.resolver = new dnsPromises.Resolver({
      timeout: Math.max(1, Math.ceil(o.dnsTimeoutMs / 2)),
      tries: 2,
    });
    if (o.servers.length > 0) this.resolver.setServers(o.servers); // resolve.ts checked their syntax
  }

  async txt(name: string): Promise<TxtAnswer> {
    try {
      return {
        kind: 'records',
        records: await withTimeout(this.resolver.resolveTxt(name), this.o.dnsTimeoutMs, 'TXT lookup'),
      };
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOTFOUND' || code === 'ENODATA') return { kind: 'none' };
      return { kind: 'error', reason: `TXT lookup of ${name} failed: ${code ?? (e as Error).message}` };
    }
  }

  /** The first usable address of `host` (A, then AAAA), or a rejection saying why there is none. */
  private async address(host: string): Promise<{ address: string; family: 4 | 6 }> {
    const refused: string[] = [];
    for (const family of [4, 6] as const) {
      let list: string[];
      try {
        list = await withTimeout(
          family === 4 ? this.resolver.resolve4(host) : this.resolver.resolve6(host),
          this.o.dnsTimeoutMs,
          'address lookup',
        );
      } catch {
        continue;
      }
      for (const address of list) {
        if (!isPrivateTarget(address, this.o.allowPrivateTargets)) return { address, family };
        refused.push(address);
      }
    }
    throw new Error(
      refused.length
        ? `${host} has only private addresses (${refused.join(', ')}), refused`
        : `${host} has no address`,
    );
  }

  /** The policy file of `domain`; rejects on anything but a 200 with at most 64 KiB within the time limit. */
  fetch(domain: string): Promise<string> {
    const host = `mta-sts.${domain}`;
    const ac = new AbortController();
    const work = (async () => {
      const target = await this.address(host);
      return new Promise<string>((resolve, reject) => {
        const req = https.request(
          {
            host,
            port: this.o.port,
            path: '/.well-known/mta-sts.txt',
            method: 'GET',
            servername: host,
            // connect to the address found through the relay's resolver (not the system's)
            lookup: ((_h: string, opts: { all?: boolean }, cb: (...a: unknown[]) => void) =>
              opts.all
                ? cb(null, [{ address: target.address, family: target.family } satisfies LookupAddress])
                : cb(null, target.address, target.family)) as unknown as net.LookupFunction,
            ...(this.o.ca ? { ca: this.o.ca } : {}),
            minVersion: 'TLSv1.2',
            agent: false,
            signal: ac.signal,
            headers: { 'user-agent': 'cartero-relay (MTA-STS)', accept: 'text/plain' },
          },
          (res) => {
            if (res.statusCode !== 200) {
              res.resume();
              // RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed"; anything else but 200 is no policy
              reject(new Error(`${host}: HTTP ${res.statusCode ?? '?'} (only 200 is a policy)`));
              return;
            }
            const chunks: Buffer[] = [];
            let size = 0;
            res.on('data', (c: Buffer) => {
              size += c.length;
              if (size > MAX_POLICY_BYTES) {
                req.destroy();
                reject(new Error(`${host}: policy larger than ${MAX_POLICY_BYTES} octets`));
                return;
              }
              chunks.push(c);
            });
            res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.end();
      });
    })();
    return withTimeout(
      work,
      this.o.fetchTimeoutMs,
      `fetch of https://${host}/.well-known/mta-sts.txt`,
    ).finally(() => ac.abort());
  }
}

/** Whether `s` is an IP literal (used to skip MTA-STS for address-literal domains). */
export const isIpLiteral = (s: string): boolean => net.isIP(s) !== 0;
