/**
 * Building blocks of the relay config schema (config-schema.ts): bounded durations, sections, shared
 * patterns and sub-schemas. See "Bounds" in config-schema.ts for the rules every field follows.
 */
import { DURATION_PATTERN, MAX_TIMER_MS, parseDuration } from './duration.js';
/**
 * A duration field bounded by `max` (and `min`, default 0ms). See "Bounds" above. `timer: false` allows a
 * bound above MAX_TIMER_MS for a field that is never used as a timer delay.
 */
export function dur(max: string, opts: { min?: string; timer?: false } = {}) {
  if (opts.timer !== false && parseDuration(max) > MAX_TIMER_MS)
    throw new Error(`duration bound ${max} is above what a timer can wait (${MAX_TIMER_MS} ms)`);
  return {
    type: 'string',
    pattern: DURATION_PATTERN,
    maxDuration: max,
    ...(opts.min !== undefined ? { minDuration: opts.min } : {}),
  } as const;
}
/** Byte counts on disk (free space, quotas): 1 PiB, far above any volume, well inside a safe integer. */
export const MAX_DISK_BYTES = 2 ** 50;
/** Recipients per hour or day, per address or tenant (rates, caps, bursts): one billion. */
export const MAX_PER_PERIOD = 1_000_000_000;
export const tlsMode = { type: 'string', enum: ['none', 'starttls', 'implicit'] } as const;
export const outboundTls = {
  type: 'string',
  enum: ['opportunistic', 'required', 'verify', 'none', 'implicit'],
  description:
    'opportunistic: STARTTLS when offered (certificate not verified, as MTAs do); required and verify: STARTTLS with a certificate verified for the host (system CAs plus outboundTls.caFile) or defer; none: never; implicit: TLS from the first byte (port 465).',
} as const;
/** A username and the file (under paths.secrets) holding its password. */
export const login = {
  type: 'object',
  additionalProperties: false,
  required: ['username', 'passwordFile'],
  properties: {
    username: { type: 'string', minLength: 1 },
    passwordFile: {
      type: 'string',
      minLength: 1,
      description: 'File under paths.secrets holding the password.',
    },
  },
} as const;
export const hostPort = {
  host: { type: 'string', minLength: 1 },
  port: { type: 'integer', minimum: 1, maximum: 65535, default: 25 },
  tls: { ...outboundTls, default: 'opportunistic' },
  credentials: login,
} as const;
export const cidr = { type: 'string', minLength: 1 } as const;
/** A domain name of two labels or more (DKIM signing domains). */
export const HOSTNAME_PATTERN =
  '^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$';
/** A DKIM selector: one or more DNS labels. */
export const SELECTOR_PATTERN =
  '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$';
/** `N/unit`, N from 1 to MAX_PER_PERIOD. */
export const RATE_PATTERN = '^([1-9][0-9]{0,8}|1000000000)/(s|m|h|d)$';

/** Client limits a listener may override (defaults in the top-level limits section). */
export const LISTENER_LIMITS = {
  maxConnectionsPerClient: {
    type: 'integer',
    minimum: 1,
    maximum: 1_000_000,
    description: 'Concurrent connections per client address (IPv6: per /64); trusted networks are exempt.',
  },
  connectionRatePerClient: {
    type: 'string',
    pattern: '^([1-9][0-9]{0,8}/(s|m|h|d)|off)$',
    description: 'New connections per client address, e.g. 1200/m, or off; trusted networks are exempt.',
  },
  commandTimeout: {
    ...dur('1h', { min: '1s' }),
    description:
      'A command line must be complete within this time of the previous reply (trickling does not extend it).',
  },
  idleTimeout: {
    ...dur('1h', { min: '1s' }),
    description: 'No byte from the client for this long closes the connection.',
  },
  minDataRate: {
    type: 'integer',
    minimum: 0,
    maximum: 1_000_000_000,
    description: 'Bytes per second DATA must average, past the first commandTimeout; 0: off.',
  },
} as const;

/**
 * A section of settings (an object): no unknown keys, and absent means `{}`, so that the defaults of its
 * fields apply.
 */
export const SECTION = { type: 'object', additionalProperties: false, default: {} } as const;

/** `props` with a `default` added to those `defaults` names (the type says so too: see ValidatedConfig). */
export function withDefaults<T extends Record<string, object>, D extends { [K in keyof T]?: unknown }>(
  props: T,
  defaults: D,
): { [K in keyof T]: K extends keyof D ? T[K] & { readonly default: D[K] } : T[K] } {
  return Object.fromEntries(
    Object.entries(props).map(([k, v]) => [k, k in defaults ? { ...v, default: defaults[k] } : v]),
  ) as { [K in keyof T]: K extends keyof D ? T[K] & { readonly default: D[K] } : T[K] };
}
