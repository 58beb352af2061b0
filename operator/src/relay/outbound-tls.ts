/**
 * spec.outboundTls of an SmtpRelay rendered into the relay config's outboundTls
 * (docs/adr/013-outbound-tls-policy.md): levels and MTA-STS pass through; the CA certificates of
 * caSecretRef become a file of the operator-owned Secret. Pure: the reconciler reads the Secret.
 */
import type { SmtpRelay, SmtpRelaySpec } from '../api/types.js';
import type { Problem } from '../conditions.js';

/** The key of caSecretRef's Secret that holds the PEM certificates when `key` is not given. */
export const DEFAULT_CA_SECRET_KEY = 'ca.crt';
/** File name of the CA certificates in the operator-owned Secret. */
export const OUTBOUND_CA_FILE = 'outbound-ca.pem';

/** The Secret and key the CA certificates come from, if the spec names one. */
export function outboundCaRef(r: SmtpRelay): { name: string; key: string } | undefined {
  const ref = r.spec?.outboundTls?.caSecretRef;
  return ref ? { name: ref.name, key: ref.key ?? DEFAULT_CA_SECRET_KEY } : undefined;
}

/**
 * The relay config's `outboundTls` (undefined when the spec has none). `caPem` is the content of
 * caSecretRef's key; when it is missing, the section is rendered without caFile and a problem says so
 * (verified sessions then trust the system CAs only, so a private CA's hosts are deferred).
 */
export function renderOutboundTls(
  spec: SmtpRelaySpec['outboundTls'],
  caPem: string | undefined,
  secretData: Record<string, string>,
  problems: Problem[],
): Record<string, unknown> | undefined {
  if (!spec) return undefined;
  const out: Record<string, unknown> = {};
  if (spec.level) out.level = spec.level;
  if (spec.caSecretRef) {
    if (caPem) {
      secretData[OUTBOUND_CA_FILE] = caPem;
      out.caFile = OUTBOUND_CA_FILE;
    } else {
      problems.push({
        reason: 'SecretMissing',
        message: `outboundTls.caSecretRef: Secret ${spec.caSecretRef.name} (key ${spec.caSecretRef.key ?? DEFAULT_CA_SECRET_KEY}) not found; verified TLS trusts the system CAs only`,
      });
    }
  }
  if (spec.policies?.length) out.policies = spec.policies.map((p) => ({ domain: p.domain, level: p.level }));
  if (spec.mtaSts && Object.keys(spec.mtaSts).length) out.mtaSts = { ...spec.mtaSts };
  return out;
}
