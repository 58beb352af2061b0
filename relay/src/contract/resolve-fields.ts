/**
 * Field-level parts of config resolution (resolve.ts): `${NAME}` references, CIDR lists, a listener's
 * client limits, and how the resolvers read the secrets a config names.
 */
import ipaddr from 'ipaddr.js';
import { ConfigError } from '../errors.js';
import type { RawLimits } from './config-raw.js';
import type { ListenerLimits } from './config-types.js';
import { parseDuration } from './duration.js';

/** A network: address and prefix length. */
export type Cidr = [ipaddr.IPv4 | ipaddr.IPv6, number];

/**
 * The content of the secret file `file` of folder `dir`, named by the config field `field` (resolve.ts
 * reads it through ResolveInput.secrets and adds it to the config's hash).
 */
export type SecretReader = (dir: 'secrets' | 'tls', file: string, field: string) => Buffer;

/** Expands `${NAME}` references to environment variables in a string; an unset one is an error. */
export function expandEnv(value: string, field: string, env: NodeJS.ProcessEnv): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const v = env[name];
    if (v === undefined || v === '')
      throw new ConfigError(field, `refers to environment variable ${name}, which is not set`);
    return v;
  });
}

export function parseCidrs(list: string[], field: string): Cidr[] {
  return list.map((c, i): Cidr => {
    try {
      if (c.includes('/')) return ipaddr.parseCIDR(c);
      const a = ipaddr.parse(c);
      return [a, a.kind() === 'ipv4' ? 32 : 128];
    } catch {
      throw new ConfigError(`${field}/${i}`, `not a CIDR or IP address: ${JSON.stringify(c)}`);
    }
  });
}

/** The client limits a listener may set; the top-level limits section gives the defaults of each. */
type ClientLimits = Pick<
  RawLimits,
  'maxConnectionsPerClient' | 'connectionRatePerClient' | 'commandTimeout' | 'idleTimeout' | 'minDataRate'
>;

/** A listener's client limits from the top-level ones with its own overrides merged in. */
export function listenerLimits(l: ClientLimits): ListenerLimits {
  const rate = /^([0-9]+)\/(s|m|h|d)$/.exec(l.connectionRatePerClient);
  return {
    maxConnectionsPerClient: l.maxConnectionsPerClient,
    ...(rate
      ? { connectionRatePerClient: { count: Number(rate[1]), perMs: parseDuration(`1${rate[2]}`) } }
      : {}),
    commandTimeoutMs: parseDuration(l.commandTimeout),
    idleTimeoutMs: parseDuration(l.idleTimeout),
    minDataRate: l.minDataRate,
  };
}
