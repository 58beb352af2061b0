/**
 * Config resolution (resolve.ts) of a tenant's DKIM keys: each private key is read, parsed and checked at
 * load (a key the relay cannot sign with, RSA under 2048 bits, or a key of the other algorithm is a config
 * error naming its field), so `--check`, start and hot reload refuse it rather than the first message.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { ConfigError } from '../errors.js';
import type { RawTenant } from './config-raw.js';
import type { DkimAlgorithm, DkimKey, TenantDkim } from './config-types.js';
import { parseDuration } from './duration.js';
import type { SecretReader } from './resolve-fields.js';

/**
 * Keys of one signing domain, all of which sign each of its messages: dual signing during a rotation is 4.
 * Bounds the signatures stored in a message's envelope (they must fit the 16 KiB reserved beside the body).
 */
export const MAX_KEYS_PER_DOMAIN = 4;

/** RSA keys shorter than this are refused (RFC 8301: at least 1024, 2048 recommended; Gmail asks 2048). */
export const MIN_RSA_BITS = 2048;
/** Longer keys do not fit one DNS TXT string list comfortably and cost much more CPU per message. */
export const MAX_RSA_BITS = 4096;

/** The problem with `key` for `algorithm`, or undefined when it can sign. */
export function keyProblem(key: KeyObject, algorithm: DkimAlgorithm): string | undefined {
  const type = key.asymmetricKeyType;
  if (algorithm === 'rsa-sha256') {
    if (type !== 'rsa') return `is a ${type ?? 'unknown'} key, not an RSA key (algorithm ${algorithm})`;
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) return `is an RSA key of ${bits} bits: at least ${MIN_RSA_BITS} are needed`;
    if (bits > MAX_RSA_BITS) return `is an RSA key of ${bits} bits: at most ${MAX_RSA_BITS} are allowed`;
    return undefined;
  }
  if (type !== 'ed25519') return `is a ${type ?? 'unknown'} key, not an Ed25519 key (algorithm ${algorithm})`;
  return undefined;
}

export function resolveDkim(
  raw: NonNullable<RawTenant['dkim']>,
  readSecret: SecretReader,
  field: string,
): TenantDkim {
  const seen = new Set<string>();
  const keys = raw.keys.map((k, i): DkimKey => {
    const f = `${field}/keys/${i}`;
    const domain = k.domain.toLowerCase().replace(/\.$/, '');
    const id = `${k.selector.toLowerCase()}._domainkey.${domain}`;
    if (seen.has(id)) throw new ConfigError(`${f}/selector`, `a second key for ${id}`);
    seen.add(id);
    if (
      raw.keys.slice(0, i + 1).filter((x) => x.domain.toLowerCase().replace(/\.$/, '') === domain).length >
      MAX_KEYS_PER_DOMAIN
    )
      throw new ConfigError(
        `${f}/domain`,
        `more than ${MAX_KEYS_PER_DOMAIN} keys for ${domain} (all of them sign each message; 4 is dual signing during a rotation)`,
      );
    const pem = readSecret('secrets', k.privateKeyFile, `${f}/privateKeyFile`);
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey(pem);
    } catch (e) {
      throw new ConfigError(`${f}/privateKeyFile`, `not a PEM private key: ${(e as Error).message}`);
    }
    const problem = keyProblem(privateKey, k.algorithm);
    if (problem) throw new ConfigError(`${f}/privateKeyFile`, problem);
    return { domain, selector: k.selector, algorithm: k.algorithm, privateKey };
  });
  return {
    keys,
    unmatched: raw.unmatched,
    ...(raw.expiry !== undefined ? { expiryMs: parseDuration(raw.expiry) } : {}),
  };
}

/** The DNS name and TXT record that publish `key`'s public half: `<selector>._domainkey.<domain>`. */
export function dkimDnsRecord(key: Pick<DkimKey, 'domain' | 'selector' | 'algorithm' | 'privateKey'>): {
  name: string;
  value: string;
} {
  const pub = createPublicKey(key.privateKey);
  // RSA: the SubjectPublicKeyInfo (what every verifier reads); Ed25519: the raw 32-byte key (RFC 8463)
  const p =
    key.algorithm === 'rsa-sha256'
      ? pub.export({ type: 'spki', format: 'der' }).toString('base64')
      : pub.export({ type: 'spki', format: 'der' }).subarray(-32).toString('base64');
  return {
    name: `${key.selector}._domainkey.${key.domain}`,
    value: `v=DKIM1; k=${key.algorithm === 'rsa-sha256' ? 'rsa' : 'ed25519'}; p=${p}`,
  };
}
