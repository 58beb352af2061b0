/**
 * A local MTA-STS policy host for tests: one HTTPS server (certificate from the test CA, see certs.ts)
 * answering `GET /.well-known/mta-sts.txt` for every `mta-sts.<domain>` it is told about, by the Host
 * header. Each domain's answer is scriptable: a policy text, an HTTP status (a redirect), or no answer at
 * all (the request hangs until the client gives up). Every request is recorded with its time.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TestCert } from './certs.js';

export type PolicyAnswer =
  { kind: 'policy'; text: string } | { kind: 'status'; status: number; location?: string } | { kind: 'hang' };

export interface PolicyServer {
  readonly port: number;
  readonly address: string;
  /** Sets what `https://mta-sts.<domain>/.well-known/mta-sts.txt` answers. */
  set(domain: string, answer: PolicyAnswer): void;
  /** The times (ms since the epoch) of the requests for `domain`'s policy, oldest first. */
  fetches(domain: string): number[];
  close(): Promise<void>;
}

/** An MTA-STS policy file (RFC 8461 §3.2), CRLF-separated. */
export function stsPolicy(mode: 'enforce' | 'testing' | 'none', mx: string[], maxAgeS: number): string {
  return ['version: STSv1', `mode: ${mode}`, ...mx.map((m) => `mx: ${m}`), `max_age: ${maxAgeS}`, ''].join(
    '\r\n',
  );
}

export async function startPolicyServer(opts: { address: string; tls: TestCert }): Promise<PolicyServer> {
  const answers = new Map<string, PolicyAnswer>();
  const seen = new Map<string, number[]>();
  const server = https.createServer({ key: opts.tls.key, cert: opts.tls.cert }, (req, res) => {
    const host = String(req.headers.host ?? '')
      .replace(/:\d+$/, '')
      .toLowerCase();
    const domain = host.replace(/^mta-sts\./, '');
    seen.set(domain, [...(seen.get(domain) ?? []), Date.now()]);
    const a = answers.get(domain);
    if (req.url !== '/.well-known/mta-sts.txt' || !host.startsWith('mta-sts.') || !a) {
      res.writeHead(404).end();
      return;
    }
    if (a.kind === 'hang') return; // closed by close() or by the client's timeout
    if (a.kind === 'status') {
      res.writeHead(a.status, a.location ? { location: a.location } : {}).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' }).end(a.text);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, opts.address, resolve);
  });
  return {
    port: (server.address() as AddressInfo).port,
    address: opts.address,
    set: (domain, answer) => answers.set(domain, answer),
    fetches: (domain) => [...(seen.get(domain) ?? [])],
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
