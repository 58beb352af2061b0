/**
 * Config resolution (resolve.ts) of the feedback loop: the token key, the listener, and the rules across
 * tenants (a returnPath needs the key; a bounce domain or feedback address names one tenant only, so a
 * report is never attributed by guess).
 */
import ipaddr from 'ipaddr.js';
import { ConfigError } from '../errors.js';
import type { ValidatedConfig } from './config-raw.js';
import type { FeedbackConfig, TenantConfig } from './config-types.js';
import { parseDuration } from './duration.js';
import { expandEnv, type SecretReader } from './resolve-fields.js';

const DAY_MS = 86_400_000;
/** The shortest token key taken: 128 bits. */
export const MIN_TOKEN_KEY_BYTES = 16;

export function resolveFeedback(
  c: ValidatedConfig,
  tenants: Map<string, TenantConfig>,
  env: NodeJS.ProcessEnv,
  readSecret: SecretReader,
): FeedbackConfig {
  const f = c.feedback;
  const key = f.tokenKeyFile ? readSecret('secrets', f.tokenKeyFile, '/feedback/tokenKeyFile') : undefined;
  if (key && key.length < MIN_TOKEN_KEY_BYTES)
    throw new ConfigError(
      '/feedback/tokenKeyFile',
      `the token key must have at least ${MIN_TOKEN_KEY_BYTES} bytes (it has ${key.length})`,
    );
  const bounceDomains = new Map<string, string>();
  const addresses = new Map<string, string>();
  c.tenants.forEach((raw, i) => {
    const t = tenants.get(raw.name)!;
    if (t.returnPath) {
      if (!key)
        throw new ConfigError(
          `/tenants/${i}/returnPath`,
          'return-path tagging needs the token key (feedback.tokenKeyFile)',
        );
      const other = bounceDomains.get(t.returnPath.domain);
      if (other !== undefined)
        throw new ConfigError(
          `/tenants/${i}/returnPath/domain`,
          `${t.returnPath.domain} is already the bounce domain of tenant ${other}`,
        );
      bounceDomains.set(t.returnPath.domain, t.name);
    }
    if (t.feedbackAddress) {
      const other = addresses.get(t.feedbackAddress);
      if (other !== undefined)
        throw new ConfigError(
          `/tenants/${i}/feedbackAddress`,
          `${t.feedbackAddress} is already the feedback address of tenant ${other}`,
        );
      addresses.set(t.feedbackAddress, t.name);
    }
  });
  let listener: FeedbackConfig['listener'];
  if (f.listener) {
    const address = expandEnv(f.listener.address, '/feedback/listener/address', env);
    if (!ipaddr.isValid(address))
      throw new ConfigError('/feedback/listener/address', `not an IP address: ${JSON.stringify(address)}`);
    listener = {
      address,
      port: f.listener.port,
      maxMessageSize: f.listener.maxMessageSize,
      timeoutMs: parseDuration(f.listener.timeout),
      maxConnections: f.listener.maxConnections,
    };
  }
  return {
    ...(key ? { key } : {}),
    tokenTtlDays: Math.max(1, Math.floor(parseDuration(f.tokenTtl) / DAY_MS)),
    ...(listener ? { listener } : {}),
    unmatchedKeep: f.unmatchedKeep,
    ...(f.peerLookup
      ? {
          peerLookup: {
            host: f.peerLookup.host.replace(/\.$/, '').toLowerCase(),
            port: f.peerLookup.port,
            timeoutMs: parseDuration(f.peerLookup.timeout),
            maxPeers: f.peerLookup.maxPeers,
          },
        }
      : {}),
  };
}
