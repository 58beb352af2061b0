/**
 * Config resolution (resolve.ts) of outboundTls: the default level for delivery by MX, the
 * per-destination levels, the extra CA certificates and MTA-STS (docs/adr/013-outbound-tls-policy.md).
 */
import { X509Certificate } from 'node:crypto';
import { ConfigError } from '../errors.js';
import type { ValidatedConfig } from './config-raw.js';
import type { OutboundTlsConfig } from './config-types.js';
import { parseDuration } from './duration.js';
import type { SecretReader } from './resolve-fields.js';

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The certificates of a PEM bundle; throws a ConfigError for `field` when it has none or a bad one. */
export function checkCaBundle(pem: Buffer, field: string): void {
  const blocks = pem.toString('utf8').match(PEM_CERT) ?? [];
  if (blocks.length === 0)
    throw new ConfigError(field, 'holds no PEM certificate (-----BEGIN CERTIFICATE-----)');
  blocks.forEach((b, i) => {
    try {
      new X509Certificate(b);
    } catch (e) {
      throw new ConfigError(
        field,
        `certificate ${i + 1} of the bundle is not valid: ${(e as Error).message}`,
      );
    }
  });
}

export function resolveOutboundTls(
  raw: ValidatedConfig['outboundTls'],
  readSecret: SecretReader,
): OutboundTlsConfig {
  const f = '/outboundTls';
  const seen = new Set<string>();
  const policies = raw.policies.map((p, i) => {
    const domain = p.domain.toLowerCase();
    if (seen.has(domain)) throw new ConfigError(`${f}/policies/${i}/domain`, `${domain} is listed twice`);
    seen.add(domain);
    return { domain, level: p.level };
  });
  let ca: Buffer | undefined;
  if (raw.caFile) {
    ca = readSecret('secrets', raw.caFile, `${f}/caFile`);
    checkCaBundle(ca, `${f}/caFile`);
  }
  const s = raw.mtaSts;
  return {
    level: raw.level,
    ...(ca ? { ca } : {}),
    policies,
    mtaSts: {
      enabled: s.enabled,
      fetchTimeoutMs: parseDuration(s.fetchTimeout),
      recheckMs: parseDuration(s.recheckInterval),
      cacheMaxEntries: s.cacheMaxEntries,
      port: s.port,
    },
  };
}
