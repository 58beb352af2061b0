/**
 * Relay configuration: the JSON Schema (the one source of truth, also used by the operator when it
 * renders relay config), loading from YAML/JSON, validation with field paths, and resolution of
 * durations and file paths into a ready-to-use `RelayConfig`.
 *
 * Bounds. Every duration, size and count in CONFIG_SCHEMA has an upper bound the runtime can honour, so
 * that `--check`, start and hot reload refuse what would fail later (a timer that fires at once, a socket
 * timeout of Infinity, a rate limit that does not fit a number). For a new key:
 * - integer or number: give it `minimum` and `maximum`. Ajv's strictNumbers (on with `strict: true`)
 *   refuses NaN and ±Infinity, which YAML can write (`.nan`, `.inf`) although JSON cannot.
 * - duration: `{ ...dur('1h'), default: '5m' }`, or `dur('1h', { min: '1s' })`. `dur` is a string of
 *   DURATION_PATTERN with the keywords `maxDuration`/`minDuration`, registered on the Ajv instance below
 *   (so checkConfigSchema, which the operator uses, applies them too); they report
 *   `must be at most 1h` / `must be at least 1s`. A bound above MAX_TIMER_MS (2^31-1 ms, about 24.8
 *   days: Node fires longer timers at once) throws at load, unless the field is marked
 *   `{ timer: false }` because it is never a timer delay (only ever added to a timestamp, e.g. maxAge).
 *   (The unbounded `duration` constant of before is gone on purpose: code still spreading it fails to
 *   compile instead of adding an unbounded field.)
 * - a field the operator renders from the SmtpRelay or IpPool CRD gets the same bound there
 *   (crds/*.yaml: `maximum`, and for durations `maxLength: 16` plus a CEL rule; see queue.maxAge).
 * - the bounds are listed in docs/config.md (section Bounds); test/unit/config-bounds.test.ts fails for a
 *   number without `maximum` or a duration without `maxDuration`.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import path from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import YAML, { CST, Lexer, LineCounter } from 'yaml';
import ipaddr from 'ipaddr.js';
import { ConfigError } from './errors.js';
import { DURATION_PATTERN, MAX_TIMER_MS, parseDuration } from './duration.js';
import { PoolManager } from './pools.js';
import { Shaper } from './shaping.js';
import { RATE_UNIT_MS, type RateUnit } from './ratelimit.js';
import type { AuthLimits } from './abuse/auth-throttle.js';

/**
 * A duration field bounded by `max` (and `min`, default 0ms). See "Bounds" above. `timer: false` allows a
 * bound above MAX_TIMER_MS for a field that is never used as a timer delay.
 */
function dur(max: string, opts: { min?: string; timer?: false } = {}) {
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
const MAX_DISK_BYTES = 2 ** 50;
/** Recipients per hour or day, per address or tenant (rates, caps, bursts): one billion. */
const MAX_PER_PERIOD = 1_000_000_000;
const tlsMode = { type: 'string', enum: ['none', 'starttls', 'implicit'] } as const;
const outboundTls = {
  type: 'string',
  enum: ['opportunistic', 'required', 'none', 'implicit'],
  description:
    'opportunistic: STARTTLS when offered (certificate not verified, as MTAs do); required: STARTTLS with a verified certificate or defer; none: never; implicit: TLS from the first byte (port 465).',
} as const;
/** A username and the file (under paths.secrets) holding its password. */
const login = {
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
const hostPort = {
  host: { type: 'string', minLength: 1 },
  port: { type: 'integer', minimum: 1, maximum: 65535, default: 25 },
  tls: { ...outboundTls, default: 'opportunistic' },
  credentials: login,
} as const;
const cidr = { type: 'string', minLength: 1 } as const;
/** `N/unit`, N from 1 to MAX_PER_PERIOD. */
export const RATE_PATTERN = '^([1-9][0-9]{0,8}|1000000000)/(s|m|h|d)$';

/** Client limits a listener may override (defaults in the top-level limits section). */
const LISTENER_LIMITS = {
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

function withDefaults<T extends Record<string, object>>(props: T, defaults: Record<string, unknown>): T {
  return Object.fromEntries(
    Object.entries(props).map(([k, v]) => [k, k in defaults ? { ...v, default: defaults[k] } : v]),
  ) as T;
}

export const CONFIG_SCHEMA = {
  $id: 'https://cartero.io/schemas/relay-config-v1.json',
  type: 'object',
  additionalProperties: false,
  required: ['version', 'listeners'],
  properties: {
    version: { const: 1, description: 'Config format version. Only 1 exists.' },
    hostname: {
      type: 'string',
      minLength: 1,
      default: 'localhost',
      description: 'Banner, EHLO and Received hostname.',
    },
    paths: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        root: {
          type: 'string',
          default: '.',
          description: 'Relative roots below resolve against this (itself relative to the config file).',
        },
        spool: { type: 'string', default: 'spool' },
        secrets: { type: 'string', default: 'secrets' },
        tls: { type: 'string', default: 'tls' },
      },
    },
    listeners: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'port'],
        properties: {
          name: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]*$' },
          address: {
            type: 'string',
            default: '127.0.0.1',
            description: 'IP to bind; ${POD_IP} style references to the environment are expanded.',
          },
          port: { type: 'integer', minimum: 0, maximum: 65535, description: '0 picks a free port (tests).' },
          tls: { ...tlsMode, default: 'none' },
          auth: { type: 'string', enum: ['required', 'optional'], default: 'optional' },
          limits: {
            type: 'object',
            additionalProperties: false,
            description: 'Per-listener overrides of the client limits in the top-level limits section.',
            properties: LISTENER_LIMITS,
          },
        },
      },
    },
    tls: {
      type: 'object',
      additionalProperties: false,
      required: ['certFile', 'keyFile'],
      properties: {
        certFile: { type: 'string', minLength: 1, description: 'PEM certificate chain, under paths.tls.' },
        keyFile: { type: 'string', minLength: 1, description: 'PEM private key, under paths.tls.' },
      },
    },
    trustedNetworks: {
      type: 'array',
      items: cidr,
      default: [],
      description: 'CIDRs that may relay without AUTH.',
    },
    accounts: {
      type: 'array',
      default: [],
      items: {
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
          tenant: { type: 'string', minLength: 1, default: 'default' },
        },
      },
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        maxMessageSize: { type: 'integer', minimum: 1024, maximum: 1_073_741_824, default: 26_214_400 },
        maxRecipients: { type: 'integer', minimum: 1, maximum: 10_000, default: 1000 },
        maxConnections: { type: 'integer', minimum: 1, maximum: 100_000, default: 1000 },
        maxReceivedHeaders: { type: 'integer', minimum: 1, maximum: 1000, default: 30 },
        maxHeaderLine: {
          type: 'integer',
          minimum: 78,
          maximum: 65_536,
          default: 998,
          description: 'Longest header line in octets, without its CRLF; a longer one gets 552 5.6.0.',
        },
        maxHeaderSize: {
          type: 'integer',
          minimum: 1024,
          maximum: 16_777_216,
          default: 1_048_576,
          description: 'Largest header section in octets; a larger one gets 552 5.6.0.',
        },
        greetingDelay: {
          ...dur('5m'),
          default: '0ms',
          description: 'Pause before the banner (early-talker check); 0ms turns it off.',
        },
        ...withDefaults(LISTENER_LIMITS, {
          maxConnectionsPerClient: 50,
          connectionRatePerClient: '1200/m',
          commandTimeout: '5m',
          idleTimeout: '5m',
          minDataRate: 500,
        }),
        reservedForTrusted: {
          type: 'integer',
          minimum: 0,
          maximum: 1_000_000,
          description:
            'Connection slots of maxConnections that only trusted networks may take (default: a tenth).',
        },
        stress: {
          type: 'object',
          additionalProperties: false,
          default: {},
          description: "Shorter timeouts while a listener is nearly full (Postfix's stress mode).",
          properties: {
            threshold: {
              type: 'number',
              minimum: 0.1,
              maximum: 1,
              default: 0.8,
              description: 'Fraction of maxConnections in use from which the stress timeouts apply.',
            },
            commandTimeout: { ...dur('1h', { min: '1s' }), default: '10s' },
            idleTimeout: { ...dur('1h', { min: '1s' }), default: '10s' },
          },
        },
        auth: {
          type: 'object',
          additionalProperties: false,
          default: {},
          description: 'AUTH throttling: per connection, per client address and per account name.',
          properties: {
            failuresPerConnection: { type: 'integer', minimum: 1, maximum: 100, default: 3 },
            failureDelay: {
              ...dur('1m'),
              default: '1s',
              description:
                'Pause before answering the 2nd failure on a connection; doubles for each further one.',
            },
            maxFailureDelay: { ...dur('1m'), default: '8s' },
            clientFailures: {
              type: 'integer',
              minimum: 0,
              maximum: 1_000_000,
              default: 10,
              description:
                'Failures per client address (IPv6: /64) within window before it is locked; 0: off.',
            },
            accountFailures: {
              type: 'integer',
              minimum: 0,
              maximum: 1_000_000,
              default: 30,
              description: 'Failures per account name within window before it is locked; 0: off.',
            },
            window: { ...dur('1d', { min: '1s' }), default: '10m' },
            lockout: { ...dur('1d', { min: '1s' }), default: '15m' },
          },
        },
      },
    },
    queue: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        maxMessages: { type: 'integer', minimum: 1, maximum: 10_000_000, default: 200_000 },
        minFreeBytes: {
          type: 'integer',
          minimum: 0,
          maximum: MAX_DISK_BYTES,
          default: 104_857_600,
          description: 'Refuse new mail (452) below this much free disk.',
        },
        retry: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            initial: { ...dur('1d', { min: '1s' }), default: '1m' },
            factor: { type: 'number', minimum: 1, maximum: 10, default: 2 },
            max: { ...dur('1d', { min: '1s' }), default: '1h' },
          },
        },
        maxAge: { ...dur('30d', { timer: false }), default: '5d' },
        delayWarningAfter: dur('30d', { timer: false }),
      },
    },
    delivery: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        concurrency: {
          type: 'integer',
          minimum: 1,
          maximum: 10_000,
          default: 200,
          description: 'Outbound connections in all.',
        },
        perDestinationConcurrency: { type: 'integer', minimum: 1, maximum: 10_000, default: 20 },
        connectTimeout: { ...dur('10m', { min: '1s' }), default: '30s' },
        commandTimeout: { ...dur('1h', { min: '1s' }), default: '5m' },
        connectionIdle: {
          ...dur('1h'),
          default: '5s',
          description: 'How long an idle outbound connection is kept for reuse.',
        },
        maxMessagesPerConnection: { type: 'integer', minimum: 1, maximum: 100_000, default: 1000 },
      },
    },
    routing: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        default: {
          type: 'object',
          additionalProperties: false,
          default: { type: 'mx' },
          required: ['type'],
          properties: {
            type: { type: 'string', enum: ['mx', 'smarthost'] },
            smarthost: {
              type: 'object',
              additionalProperties: false,
              required: ['host'],
              properties: hostPort,
            },
          },
          if: { properties: { type: { const: 'smarthost' } } },
          then: { required: ['smarthost'] },
          else: { not: { required: ['smarthost'] } },
        },
        domains: {
          type: 'array',
          default: [],
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['domain', 'host'],
            properties: { domain: { type: 'string', pattern: '^(\\*\\.)?[A-Za-z0-9.-]+$' }, ...hostPort },
          },
        },
        backups: {
          type: 'array',
          default: [],
          items: { type: 'object', additionalProperties: false, required: ['host'], properties: hostPort },
        },
      },
    },
    dns: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        servers: {
          type: 'array',
          items: { type: 'string' },
          description: 'host or host:port; system resolvers when empty.',
        },
        timeout: { ...dur('1m', { min: '100ms' }), default: '10s' },
        allowPrivateTargets: {
          type: 'array',
          items: cidr,
          default: [],
          description:
            'MX/A targets in these ranges are allowed (loopback, private and cluster ranges are refused otherwise).',
        },
        mxPort: {
          type: 'integer',
          minimum: 1,
          maximum: 65535,
          default: 25,
          description: 'Test only: the port MX hosts are contacted on.',
        },
      },
    },
    tenants: {
      type: 'array',
      default: [],
      description:
        'Senders sharing this relay. Without tenants, every message belongs to the tenant "default", unlimited.',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name'],
        properties: {
          name: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$' },
          accounts: {
            type: 'array',
            default: [],
            items: login,
          },
          trustedNetworks: {
            type: 'array',
            items: cidr,
            default: [],
            description: 'Clients in these CIDRs send as this tenant without AUTH.',
          },
          senderDomains: {
            type: 'array',
            items: { type: 'string', pattern: '^(\\*\\.)?[A-Za-z0-9.-]+$' },
            default: [],
            description: 'MAIL FROM domains allowed (exact, or *.suffix for subdomains); empty allows any.',
          },
          rateLimits: {
            type: 'array',
            items: { type: 'string', pattern: RATE_PATTERN },
            default: [],
            description: 'e.g. ["10/s", "1000/h", "10000/d"], counted in accepted recipients.',
          },
          burst: {
            type: 'integer',
            minimum: 1,
            maximum: MAX_PER_PERIOD,
            description: 'Bucket size of per-second and per-minute limits (default: the limit itself).',
          },
          ipPool: {
            type: 'string',
            description: 'Name of an entry in ipPools; mail of this tenant leaves from its addresses.',
          },
          retry: {
            type: 'object',
            additionalProperties: false,
            properties: {
              initial: dur('1d', { min: '1s' }),
              factor: { type: 'number', minimum: 1, maximum: 10 },
              max: dur('1d', { min: '1s' }),
            },
          },
          maxAge: dur('30d', { timer: false }),
          quota: {
            type: 'object',
            additionalProperties: false,
            default: {},
            properties: {
              messages: { type: 'integer', minimum: 1, maximum: 10_000_000 },
              bytes: { type: 'integer', minimum: 1, maximum: MAX_DISK_BYTES },
            },
          },
          bounceRate: {
            type: 'object',
            additionalProperties: false,
            default: {},
            properties: {
              warn: { type: 'number', minimum: 0, maximum: 1, default: 0.05 },
              pause: { type: 'number', minimum: 0, maximum: 1, default: 0.1 },
              window: { ...dur('30d', { min: '1m', timer: false }), default: '1h' },
              minVolume: { type: 'integer', minimum: 1, maximum: MAX_PER_PERIOD, default: 100 },
              cooldown: { ...dur('30d', { timer: false }), default: '1h' },
            },
          },
          suppression: {
            type: 'object',
            additionalProperties: false,
            default: {},
            properties: {
              enabled: { type: 'boolean', default: true },
              ttl: { ...dur('3650d', { min: '1s', timer: false }), default: '30d' },
            },
          },
        },
      },
    },
    ipPools: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'addresses'],
        properties: {
          name: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$' },
          addresses: {
            type: 'array',
            minItems: 1,
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['ip', 'ehlo'],
              properties: {
                ip: { type: 'string', minLength: 1 },
                ehlo: {
                  type: 'string',
                  pattern:
                    '^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$',
                  description: 'EHLO name; must match the PTR record of ip.',
                },
                perHour: { type: 'integer', minimum: 1, maximum: MAX_PER_PERIOD },
                perDay: { type: 'integer', minimum: 1, maximum: MAX_PER_PERIOD },
                pod: {
                  type: 'string',
                  minLength: 1,
                  description:
                    'Use the address only in the relay whose POD_NAME environment variable equals this (a fleet shares one config).',
                },
                node: {
                  type: 'string',
                  minLength: 1,
                  description:
                    'Use the address only in the relay whose NODE_NAME environment variable equals this (host-network fleets).',
                },
                bind: {
                  type: 'boolean',
                  default: true,
                  description:
                    'false: do not bind to the address (an egress gateway maps the pod to it); its EHLO name and caps still apply.',
                },
              },
            },
          },
          warmup: {
            type: 'object',
            additionalProperties: false,
            required: ['start', 'dailyCaps'],
            properties: {
              start: {
                type: 'string',
                pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}$',
                description: 'UTC date of day 1.',
              },
              dailyCaps: {
                type: 'array',
                minItems: 1,
                items: { type: 'integer', minimum: 1, maximum: MAX_PER_PERIOD },
                description: 'Per-address cap on day 1, 2, ...; none after the last day.',
              },
            },
          },
        },
      },
    },
    shaping: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        defaults: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            maxConnections: { type: 'integer', minimum: 1, maximum: 10_000, default: 20 },
            messagesPerConnection: { type: 'integer', minimum: 1, maximum: 100_000, default: 100 },
            messagesPerSecond: { type: 'number', exclusiveMinimum: 0, maximum: 1_000_000 },
          },
        },
        rules: {
          type: 'array',
          default: [],
          items: {
            type: 'object',
            additionalProperties: false,
            properties: {
              domain: { type: 'string', pattern: '^(\\*\\.)?[A-Za-z0-9.-]+$' },
              mx: { type: 'string', pattern: '^(\\*\\.)?[A-Za-z0-9.-]+$' },
              maxConnections: { type: 'integer', minimum: 1, maximum: 10_000 },
              messagesPerConnection: { type: 'integer', minimum: 1, maximum: 100_000 },
              messagesPerSecond: { type: 'number', exclusiveMinimum: 0, maximum: 1_000_000 },
            },
          },
        },
        backoff: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            initial: { ...dur('1d', { min: '1s' }), default: '1m' },
            max: { ...dur('1d', { min: '1s' }), default: '30m' },
          },
        },
      },
    },
    peer: {
      ...login,
      description:
        'The account relays of one fleet use with each other to hand off queued mail when draining.',
    },
    fleet: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        rateLimitShare: {
          type: 'number',
          exclusiveMinimum: 0,
          maximum: 1,
          default: 1,
          description:
            "This replica's share of every tenant rate limit (1/N in a fleet of N): what it enforces alone, without rateLimitStore or while the store does not answer.",
        },
        rateLimitStore: {
          type: 'object',
          additionalProperties: false,
          required: ['type', 'address'],
          description:
            'A Redis shared by the fleet: every replica counts tenant rate limits there, fleet-wide (docs/adr/009-fleet-rate-limits.md).',
          properties: {
            type: { enum: ['redis'] },
            address: {
              type: 'string',
              minLength: 1,
              maxLength: 300,
              description:
                'host:port or [IPv6]:port (port 6379 when omitted); environment variables are expanded.',
            },
            username: { type: 'string', minLength: 1, maxLength: 128 },
            passwordFile: {
              type: 'string',
              minLength: 1,
              description: 'File under paths.secrets with the Redis password (AUTH).',
            },
            keyPrefix: {
              type: 'string',
              maxLength: 64,
              pattern: '^[A-Za-z0-9:_./-]*$',
              default: 'cartero:',
              description: 'Prefix of every key: fleets sharing one Redis need different ones.',
            },
            timeout: {
              ...dur('10s', { min: '1ms' }),
              default: '250ms',
              description:
                'How long an RCPT waits for the store before the replica enforces its local share instead.',
            },
            maxInFlight: { type: 'integer', minimum: 1, maximum: 100_000, default: 1000 },
          },
        },
        revision: {
          type: 'string',
          maxLength: 128,
          description:
            'An opaque label of this config, echoed by GET /config: the operator sets it to tell which relays run what it rendered.',
        },
      },
    },
    admin: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        address: { type: 'string', default: '127.0.0.1' },
        port: { type: 'integer', minimum: 0, maximum: 65535, default: 9025 },
        tokenFile: {
          type: 'string',
          minLength: 1,
          description:
            'File under paths.secrets with the bearer token the admin API requires (metrics and health stay open).',
        },
      },
    },
    shutdown: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { gracePeriod: { ...dur('1h'), default: '30s' } },
    },
    logging: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        level: {
          type: 'string',
          enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
          default: 'info',
        },
      },
    },
  },
} as const;

export type TlsMode = 'none' | 'starttls' | 'implicit';
export type OutboundTls = 'opportunistic' | 'required' | 'none' | 'implicit';
export interface HostRoute {
  host: string;
  port: number;
  tls: OutboundTls;
  credentials?: { username: string; password: string };
}
export interface ListenerConfig {
  name: string;
  address: string;
  port: number;
  tls: TlsMode;
  auth: 'required' | 'optional';
  /** The client limits of this listener (its overrides over the top-level ones). */
  limits: ListenerLimits;
}
export interface ListenerLimits {
  maxConnectionsPerClient: number;
  connectionRatePerClient?: { count: number; perMs: number };
  commandTimeoutMs: number;
  idleTimeoutMs: number;
  minDataRate: number;
}
export interface TenantConfig {
  name: string;
  senderDomains: string[];
  rateLimits: string[];
  burst?: number;
  ipPool?: string;
  retry?: { initialMs: number; factor: number; maxMs: number };
  maxAgeMs?: number;
  quota: { messages?: number; bytes?: number };
  bounceRate: { warn: number; pause: number; windowMs: number; minVolume: number; cooldownMs: number };
  suppression: { enabled: boolean; ttlMs: number };
}
export interface PoolConfigResolved {
  name: string;
  addresses: { ip: string; ehlo: string; perHour?: number; perDay?: number }[];
  warmup?: { start: string; dailyCaps: number[] };
}
export const DEFAULT_TENANT = 'default';

export interface RelayConfig {
  hostname: string;
  spoolDir: string;
  listeners: ListenerConfig[];
  tls?: { cert: Buffer; key: Buffer };
  trustedNetworks: [ipaddr.IPv4 | ipaddr.IPv6, number][];
  accounts: Map<string, { password: Buffer; tenant: string }>;
  limits: {
    maxMessageSize: number;
    maxRecipients: number;
    maxConnections: number;
    idleTimeoutMs: number;
    maxReceivedHeaders: number;
    maxHeaderLine: number;
    maxHeaderSize: number;
    greetingDelayMs: number;
    reservedForTrusted: number;
    stress: { threshold: number; commandTimeoutMs: number; idleTimeoutMs: number };
    auth: AuthLimits;
  };
  queue: {
    maxMessages: number;
    minFreeBytes: number;
    retry: { initialMs: number; factor: number; maxMs: number };
    maxAgeMs: number;
    delayWarningAfterMs?: number;
  };
  delivery: {
    concurrency: number;
    perDestinationConcurrency: number;
    connectTimeoutMs: number;
    commandTimeoutMs: number;
    connectionIdleMs: number;
    maxMessagesPerConnection: number;
  };
  routing: {
    default: { type: 'mx' } | { type: 'smarthost'; smarthost: HostRoute };
    domains: (HostRoute & { domain: string })[];
    backups: HostRoute[];
  };
  dns: {
    servers: string[];
    timeoutMs: number;
    allowPrivateTargets: [ipaddr.IPv4 | ipaddr.IPv6, number][];
    mxPort: number;
  };
  admin: { address: string; port: number; token?: Buffer };
  tenants: Map<string, TenantConfig>;
  /** Clients in these CIDRs send as the tenant named (most specific first); the global trustedNetworks map to 'default'. */
  tenantNetworks: { net: [ipaddr.IPv4 | ipaddr.IPv6, number]; tenant: string }[];
  ipPools: PoolConfigResolved[];
  shaping: {
    defaults: { maxConnections: number; messagesPerConnection: number; messagesPerSecond?: number };
    rules: {
      domain?: string;
      mx?: string;
      maxConnections?: number;
      messagesPerConnection?: number;
      messagesPerSecond?: number;
    }[];
    backoff: { initialMs: number; maxMs: number };
  };
  fleet: {
    rateLimitShare: number;
    revision?: string;
    rateLimitStore?: {
      type: 'redis';
      host: string;
      port: number;
      username?: string;
      password?: string;
      keyPrefix: string;
      timeoutMs: number;
      maxInFlight: number;
    };
  };
  peer?: { username: string; password: Buffer };
  /** sha256 of the config file and every secret it names: which config this relay runs. */
  hash: string;
  /** Folders whose changes may change the config (secrets, TLS): watched for hot reload. */
  watchPaths: string[];
  gracePeriodMs: number;
  logLevel: string;
}

const ajv = new Ajv({
  allErrors: false,
  useDefaults: true,
  strict: true,
  strictNumbers: true, // NaN and ±Infinity (YAML .nan, .inf) are not numbers
  strictRequired: false,
  allowUnionTypes: true,
  verbose: true, // errors carry the value: describe() words .inf and .nan
});
const DURATION_RE = new RegExp(DURATION_PATTERN);
/** The keywords `maxDuration` and `minDuration` (see "Bounds" at the top); the bound is a duration string. */
for (const keyword of ['maxDuration', 'minDuration'] as const) {
  ajv.addKeyword({
    keyword,
    type: 'string',
    schemaType: 'string',
    errors: true,
    compile(bound: string) {
      const limitMs = parseDuration(bound); // a bad bound fails here, when the schema compiles
      const check: ((data: string) => boolean) & { errors?: Partial<ErrorObject>[] } = (data) => {
        if (!DURATION_RE.test(data)) return true; // `pattern` reports it
        let ms: number;
        try {
          ms = parseDuration(data);
        } catch {
          ms = Infinity; // too long to count in milliseconds: above any bound
        }
        const ok = keyword === 'maxDuration' ? ms <= limitMs : ms >= limitMs;
        check.errors = ok
          ? []
          : [
              {
                keyword,
                message: `must be at ${keyword === 'maxDuration' ? 'most' : 'least'} ${bound}`,
                params: { limit: bound },
              },
            ];
        return ok;
      };
      return check;
    },
  });
}
const validate = ajv.compile(CONFIG_SCHEMA);

/**
 * Checks a config document against CONFIG_SCHEMA only (no files read, no cross-field checks) and returns
 * the first problem, or undefined. The operator uses it on the config it renders. `doc` is not changed.
 */
export function checkConfigSchema(doc: unknown): ConfigError | undefined {
  const copy = structuredClone(doc);
  return validate(copy) ? undefined : describe(validate.errors![0]);
}

function describe(err: ErrorObject): ConfigError {
  const field = err.instancePath || '/';
  switch (err.keyword) {
    case 'additionalProperties':
      return new ConfigError(
        `${err.instancePath}/${(err.params as { additionalProperty: string }).additionalProperty}`,
        'unknown field',
      );
    case 'required':
      return new ConfigError(
        `${err.instancePath}/${(err.params as { missingProperty: string }).missingProperty}`,
        'is required',
      );
    case 'enum':
      return new ConfigError(
        field,
        `must be one of ${(err.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`,
      );
    case 'pattern': {
      const pattern = (err.params as { pattern: string }).pattern;
      return new ConfigError(
        field,
        pattern === DURATION_PATTERN
          ? 'must be a duration such as 250ms, 30s, 5m, 4h or 5d'
          : pattern === RATE_PATTERN
            ? `must be a rate such as 10/s, 600/m, 1000/h or 10000/d, from 1 to ${MAX_PER_PERIOD} per unit`
            : `must match ${pattern}`,
      );
    }
    case 'type': {
      // YAML's .inf and .nan (and a number too large for a double, which reads as Infinity)
      const data: unknown = err.data;
      const s = err.parentSchema as { minimum?: number; maximum?: number; pattern?: string } | undefined;
      if (s?.pattern === DURATION_PATTERN)
        return new ConfigError(field, 'must be a duration such as 250ms, 30s, 5m, 4h or 5d');
      if (typeof data === 'number' && data === Infinity && s?.maximum !== undefined)
        return new ConfigError(field, `must be <= ${s.maximum}`);
      if (typeof data === 'number' && data === -Infinity && s?.minimum !== undefined)
        return new ConfigError(field, `must be >= ${s.minimum}`);
      if (typeof data === 'number' && !Number.isFinite(data))
        return new ConfigError(field, `${err.message ?? 'is invalid'}, not ${String(data)}`);
      return new ConfigError(field, err.message ?? 'is invalid');
    }
    case 'const':
      return new ConfigError(
        field,
        `must be ${JSON.stringify((err.params as { allowedValue: unknown }).allowedValue)}`,
      );
    case 'not':
      return new ConfigError(
        field,
        'has a field that is not allowed here (smarthost settings only go with type: smarthost)',
      );
    default:
      return new ConfigError(field, err.message ?? 'is invalid');
  }
}

/** Expands `${NAME}` references to environment variables in a string; an unset one is an error. */
function expandEnv(value: string, field: string, env: NodeJS.ProcessEnv): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const v = env[name];
    if (v === undefined || v === '')
      throw new ConfigError(field, `refers to environment variable ${name}, which is not set`);
    return v;
  });
}

function parseCidrs(list: string[], field: string): [ipaddr.IPv4 | ipaddr.IPv6, number][] {
  return list.map((c, i) => {
    try {
      return c.includes('/')
        ? ipaddr.parseCIDR(c)
        : (() => {
            const a = ipaddr.parse(c);
            return [a, a.kind() === 'ipv4' ? 32 : 128] as [ipaddr.IPv4 | ipaddr.IPv6, number];
          })();
    } catch {
      throw new ConfigError(`${field}/${i}`, `not a CIDR or IP address: ${JSON.stringify(c)}`);
    }
  });
}

function readSecret(root: string, file: string, field: string): Buffer {
  const p = path.resolve(root, file);
  try {
    const data = readFileSync(p);
    // A trailing newline in a secret file is an editor artefact, not part of the secret.
    let end = data.length;
    while (end > 0 && (data[end - 1] === 0x0a || data[end - 1] === 0x0d)) end--;
    if (end === 0) throw new ConfigError(field, `secret file ${p} is empty`);
    return data.subarray(0, end);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(field, `cannot read ${p}: ${(e as Error).message}`);
  }
}

/** A listener's client limits from the top-level ones with its own overrides merged in. */
function listenerLimits(l: {
  maxConnectionsPerClient: number;
  connectionRatePerClient: string;
  commandTimeout: string;
  idleTimeout: string;
  minDataRate: number;
}): ListenerLimits {
  const rate = /^([0-9]+)\/(s|m|h|d)$/.exec(l.connectionRatePerClient);
  return {
    maxConnectionsPerClient: l.maxConnectionsPerClient,
    ...(rate
      ? { connectionRatePerClient: { count: Number(rate[1]), perMs: RATE_UNIT_MS[rate[2] as RateUnit] } }
      : {}),
    commandTimeoutMs: parseDuration(l.commandTimeout),
    idleTimeoutMs: parseDuration(l.idleTimeout),
    minDataRate: l.minDataRate,
  };
}

/** Validates a parsed config document (applying defaults in place) and resolves it. */
export function resolveConfig(
  doc: unknown,
  baseDir: string,
  env: NodeJS.ProcessEnv = process.env,
): RelayConfig {
  const hasher = createHash('sha256');
  const sec = (root: string, file: string, field: string): Buffer => {
    const b = readSecret(root, file, field);
    hasher.update(field).update('\0').update(b).update('\0');
    return b;
  };
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc))
    throw new ConfigError(
      '/',
      `must be a mapping (key: value), not ${Array.isArray(doc) ? 'a list' : doc === null ? 'null' : `a ${typeof doc}`}`,
    );
  if (!validate(doc)) throw describe(validate.errors![0]);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const c = doc as any;
  const root = path.resolve(baseDir, c.paths.root);
  const under = (p: string) => path.resolve(root, p);
  const secretsDir = under(c.paths.secrets);
  const rateLimitStore = (r: {
    type: 'redis';
    address: string;
    username?: string;
    passwordFile?: string;
    keyPrefix: string;
    timeout: string;
    maxInFlight: number;
  }): NonNullable<RelayConfig['fleet']['rateLimitStore']> => {
    const f = '/fleet/rateLimitStore';
    const address = expandEnv(r.address, `${f}/address`, env);
    const m = /^\[([0-9a-fA-F:.]+)\](?::(\d{1,5}))?$|^([A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(address);
    const host = m?.[1] ?? m?.[3];
    const port = Number(m?.[2] ?? m?.[4] ?? 6379);
    if (!host || !(port >= 1 && port <= 65535))
      throw new ConfigError(`${f}/address`, `not host:port: ${JSON.stringify(address)}`);
    return {
      type: r.type,
      host,
      port,
      ...(r.username ? { username: r.username } : {}),
      ...(r.passwordFile
        ? { password: sec(secretsDir, r.passwordFile, `${f}/passwordFile`).toString('utf8').trim() }
        : {}),
      keyPrefix: r.keyPrefix,
      timeoutMs: parseDuration(r.timeout),
      maxInFlight: r.maxInFlight,
    };
  };
  const tlsDir = under(c.paths.tls);
  const names = new Set<string>();
  const listeners: ListenerConfig[] = c.listeners.map((l: ListenerConfig, i: number) => {
    if (names.has(l.name)) throw new ConfigError(`/listeners/${i}/name`, `duplicate listener name ${l.name}`);
    names.add(l.name);
    const address = expandEnv(l.address, `/listeners/${i}/address`, env);
    if (!ipaddr.isValid(address))
      throw new ConfigError(`/listeners/${i}/address`, `not an IP address: ${JSON.stringify(address)}`);
    if (l.tls !== 'none' && !c.tls)
      throw new ConfigError(
        `/listeners/${i}/tls`,
        `tls: ${l.tls} needs the top-level tls section (certFile, keyFile)`,
      );
    const { limits: own, ...rest } = l as ListenerConfig & { limits?: Record<string, unknown> };
    return { ...rest, address, limits: listenerLimits({ ...c.limits, ...own }) };
  });
  const accounts = new Map<string, { password: Buffer; tenant: string }>();
  c.accounts.forEach((a: { username: string; passwordFile: string; tenant: string }, i: number) => {
    if (accounts.has(a.username))
      throw new ConfigError(`/accounts/${i}/username`, `duplicate account ${a.username}`);
    accounts.set(a.username, {
      password: sec(secretsDir, a.passwordFile, `/accounts/${i}/passwordFile`),
      tenant: a.tenant,
    });
  });
  const tenants = new Map<string, TenantConfig>();
  const tenantNetworks: RelayConfig['tenantNetworks'] = [];
  const poolNames = new Set<string>((c.ipPools as { name: string }[]).map((p) => p.name));
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  (c.tenants as any[]).forEach((t, i) => {
    const f = `/tenants/${i}`;
    if (tenants.has(t.name)) throw new ConfigError(`${f}/name`, `tenant ${t.name} is defined twice`);
    if (t.ipPool !== undefined && !poolNames.has(t.ipPool))
      throw new ConfigError(`${f}/ipPool`, `no ip pool named ${JSON.stringify(t.ipPool)} in /ipPools`);
    if (
      t.retry &&
      parseDuration(t.retry.max ?? c.queue.retry.max) <
        parseDuration(t.retry.initial ?? c.queue.retry.initial)
    )
      throw new ConfigError(`${f}/retry/max`, 'must not be shorter than retry.initial');
    if (t.bounceRate.pause < t.bounceRate.warn)
      throw new ConfigError(`${f}/bounceRate/pause`, 'must not be below bounceRate.warn');
    t.rateLimits.forEach((r: string, k: number) => {
      if (t.rateLimits.findIndex((x: string) => x.split('/')[1] === r.split('/')[1]) !== k)
        throw new ConfigError(`${f}/rateLimits/${k}`, `a second limit per ${r.split('/')[1]}`);
    });
    t.accounts.forEach((a: { username: string; passwordFile: string }, k: number) => {
      if (accounts.has(a.username))
        throw new ConfigError(`${f}/accounts/${k}/username`, `duplicate account ${a.username}`);
      accounts.set(a.username, {
        password: sec(secretsDir, a.passwordFile, `${f}/accounts/${k}/passwordFile`),
        tenant: t.name,
      });
    });
    parseCidrs(t.trustedNetworks, `${f}/trustedNetworks`).forEach((net) =>
      tenantNetworks.push({ net, tenant: t.name }),
    );
    tenants.set(t.name, {
      name: t.name,
      senderDomains: t.senderDomains.map((d: string) => d.toLowerCase()),
      rateLimits: t.rateLimits,
      ...(t.burst !== undefined ? { burst: t.burst } : {}),
      ...(t.ipPool !== undefined ? { ipPool: t.ipPool } : {}),
      ...(t.retry
        ? {
            retry: {
              initialMs: parseDuration(t.retry.initial ?? c.queue.retry.initial),
              factor: t.retry.factor ?? c.queue.retry.factor,
              maxMs: parseDuration(t.retry.max ?? c.queue.retry.max),
            },
          }
        : {}),
      ...(t.maxAge ? { maxAgeMs: parseDuration(t.maxAge) } : {}),
      quota: { ...t.quota },
      bounceRate: {
        warn: t.bounceRate.warn,
        pause: t.bounceRate.pause,
        windowMs: parseDuration(t.bounceRate.window),
        minVolume: t.bounceRate.minVolume,
        cooldownMs: parseDuration(t.bounceRate.cooldown),
      },
      suppression: { enabled: t.suppression.enabled, ttlMs: parseDuration(t.suppression.ttl) },
    });
  });
  if (c.peer && accounts.has(c.peer.username))
    throw new ConfigError('/peer/username', `${c.peer.username} is also a tenant account`);
  for (const [user, a] of accounts) {
    if (tenants.size > 0 && a.tenant !== DEFAULT_TENANT && !tenants.has(a.tenant)) {
      const i = (c.accounts as { username: string }[]).findIndex((x) => x.username === user);
      throw new ConfigError(
        `/accounts/${i}/tenant`,
        `no tenant named ${JSON.stringify(a.tenant)} in /tenants`,
      );
    }
  }
  if (!tenants.has(DEFAULT_TENANT)) {
    tenants.set(DEFAULT_TENANT, {
      name: DEFAULT_TENANT,
      senderDomains: [],
      rateLimits: [],
      quota: {},
      bounceRate: { warn: 0.05, pause: 0.1, windowMs: 3_600_000, minVolume: 100, cooldownMs: 3_600_000 },
      suppression: { enabled: true, ttlMs: 30 * 86_400_000 },
    });
  }
  // most specific network first, so a tenant's /32 wins over a /8
  tenantNetworks.sort((a, b) => b.net[1] - a.net[1]);
  const poolSeen = new Set<string>();
  const ipSeen = new Map<string, string>();
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const ipPools: PoolConfigResolved[] = (c.ipPools as any[]).map((p, i) => {
    if (poolSeen.has(p.name)) throw new ConfigError(`/ipPools/${i}/name`, `pool ${p.name} is defined twice`);
    poolSeen.add(p.name);
    p.addresses.forEach((a: { ip: string; pod?: string }, k: number) => {
      if (!ipaddr.isValid(a.ip))
        throw new ConfigError(
          `/ipPools/${i}/addresses/${k}/ip`,
          `not an IP address: ${JSON.stringify(a.ip)}`,
        );
      const other = ipSeen.get(a.ip);
      if (other)
        throw new ConfigError(`/ipPools/${i}/addresses/${k}/ip`, `${a.ip} is already in pool ${other}`);
      ipSeen.set(a.ip, p.name);
    });
    if (p.warmup) {
      // Date.parse rolls 2024-02-30 over to March 1st: only a date that reads back the same is valid
      const start = Date.parse(`${p.warmup.start}T00:00:00Z`);
      if (Number.isNaN(start) || new Date(start).toISOString().slice(0, 10) !== p.warmup.start)
        throw new ConfigError(`/ipPools/${i}/warmup/start`, 'not a valid date');
    }
    // A fleet shares one config: each relay keeps the addresses allocated to its own pod name.
    const mine = p.addresses.filter(
      (a: { pod?: string; node?: string }) =>
        (a.pod === undefined || a.pod === env.POD_NAME) && (a.node === undefined || a.node === env.NODE_NAME),
    );
    if (mine.length === 0)
      throw new ConfigError(
        `/ipPools/${i}/addresses`,
        env.POD_NAME || env.NODE_NAME
          ? `no address of pool ${p.name} is allocated to pod ${env.POD_NAME ?? '(unset)'} on node ${env.NODE_NAME ?? '(unset)'}`
          : `every address of pool ${p.name} names a pod or a node, and POD_NAME and NODE_NAME are not set`,
      );
    const addresses = mine.map(({ pod: _pod, node: _node, ...a }: { pod?: string; node?: string }) => a);
    return { name: p.name, addresses, ...(p.warmup ? { warmup: p.warmup } : {}) };
  });
  const hostRoute = (
    r: {
      host: string;
      port: number;
      tls: OutboundTls;
      credentials?: { username: string; passwordFile: string };
    },
    field: string,
  ): HostRoute => ({
    host: r.host,
    port: r.port,
    tls: r.tls,
    ...(r.credentials
      ? {
          credentials: {
            username: r.credentials.username,
            password: sec(
              secretsDir,
              r.credentials.passwordFile,
              `${field}/credentials/passwordFile`,
            ).toString('utf8'),
          },
        }
      : {}),
  });
  const retry = c.queue.retry;
  const cfg: RelayConfig = {
    hostname: c.hostname,
    spoolDir: under(c.paths.spool),
    listeners,
    trustedNetworks: parseCidrs(c.trustedNetworks, '/trustedNetworks'),
    accounts,
    limits: {
      maxMessageSize: c.limits.maxMessageSize,
      maxRecipients: c.limits.maxRecipients,
      maxConnections: c.limits.maxConnections,
      idleTimeoutMs: parseDuration(c.limits.idleTimeout),
      maxReceivedHeaders: c.limits.maxReceivedHeaders,
      maxHeaderLine: c.limits.maxHeaderLine,
      maxHeaderSize: c.limits.maxHeaderSize,
      greetingDelayMs: parseDuration(c.limits.greetingDelay),
      reservedForTrusted: c.limits.reservedForTrusted ?? Math.floor(c.limits.maxConnections / 10),
      stress: {
        threshold: c.limits.stress.threshold,
        commandTimeoutMs: parseDuration(c.limits.stress.commandTimeout),
        idleTimeoutMs: parseDuration(c.limits.stress.idleTimeout),
      },
      auth: {
        failuresPerConnection: c.limits.auth.failuresPerConnection,
        failureDelayMs: parseDuration(c.limits.auth.failureDelay),
        maxFailureDelayMs: parseDuration(c.limits.auth.maxFailureDelay),
        clientFailures: c.limits.auth.clientFailures,
        accountFailures: c.limits.auth.accountFailures,
        windowMs: parseDuration(c.limits.auth.window),
        lockoutMs: parseDuration(c.limits.auth.lockout),
      },
    },
    queue: {
      maxMessages: c.queue.maxMessages,
      minFreeBytes: c.queue.minFreeBytes,
      retry: {
        initialMs: parseDuration(retry.initial),
        factor: retry.factor,
        maxMs: parseDuration(retry.max),
      },
      maxAgeMs: parseDuration(c.queue.maxAge),
      ...(c.queue.delayWarningAfter ? { delayWarningAfterMs: parseDuration(c.queue.delayWarningAfter) } : {}),
    },
    delivery: {
      concurrency: c.delivery.concurrency,
      perDestinationConcurrency: c.delivery.perDestinationConcurrency,
      connectTimeoutMs: parseDuration(c.delivery.connectTimeout),
      commandTimeoutMs: parseDuration(c.delivery.commandTimeout),
      connectionIdleMs: parseDuration(c.delivery.connectionIdle),
      maxMessagesPerConnection: c.delivery.maxMessagesPerConnection,
    },
    routing: {
      default:
        c.routing.default.type === 'smarthost'
          ? {
              type: 'smarthost',
              smarthost: hostRoute(c.routing.default.smarthost, '/routing/default/smarthost'),
            }
          : { type: 'mx' },
      domains: c.routing.domains.map(
        (d: { domain: string } & Parameters<typeof hostRoute>[0], i: number) => ({
          domain: d.domain.toLowerCase(),
          ...hostRoute(d, `/routing/domains/${i}`),
        }),
      ),
      backups: c.routing.backups.map((b: Parameters<typeof hostRoute>[0], i: number) =>
        hostRoute(b, `/routing/backups/${i}`),
      ),
    },
    dns: {
      servers: c.dns.servers ?? [],
      timeoutMs: parseDuration(c.dns.timeout),
      allowPrivateTargets: parseCidrs(c.dns.allowPrivateTargets, '/dns/allowPrivateTargets'),
      mxPort: c.dns.mxPort,
    },
    admin: {
      address: expandEnv(c.admin.address, '/admin/address', env),
      port: c.admin.port,
      ...(c.admin.tokenFile ? { token: sec(secretsDir, c.admin.tokenFile, '/admin/tokenFile') } : {}),
    },
    tenants,
    tenantNetworks: [
      ...tenantNetworks,
      ...parseCidrs(c.trustedNetworks, '/trustedNetworks').map((net) => ({ net, tenant: DEFAULT_TENANT })),
    ],
    ipPools,
    shaping: {
      defaults: { ...c.shaping.defaults },
      rules: c.shaping.rules,
      backoff: {
        initialMs: parseDuration(c.shaping.backoff.initial),
        maxMs: parseDuration(c.shaping.backoff.max),
      },
    },
    fleet: {
      rateLimitShare: c.fleet.rateLimitShare,
      ...(c.fleet.revision ? { revision: c.fleet.revision } : {}),
      ...(c.fleet.rateLimitStore ? { rateLimitStore: rateLimitStore(c.fleet.rateLimitStore) } : {}),
    },
    ...(c.peer
      ? {
          peer: {
            username: c.peer.username,
            password: sec(secretsDir, c.peer.passwordFile, '/peer/passwordFile'),
          },
        }
      : {}),
    hash: '',
    watchPaths: [secretsDir, tlsDir],
    gracePeriodMs: parseDuration(c.shutdown.gracePeriod),
    logLevel: c.logging.level,
  };
  cfg.dns.servers.forEach((srv, i) => {
    const m = /^\[([^\]]+)\](?::(\d+))?$|^([^:]+)(?::(\d+))?$|^([0-9a-fA-F:]+)$/.exec(srv);
    const ip = m?.[1] ?? m?.[3] ?? m?.[5];
    const port = Number(m?.[2] ?? m?.[4] ?? 53);
    if (!ip || !ipaddr.isValid(ip) || !(port >= 1 && port <= 65535)) {
      throw new ConfigError(
        `/dns/servers/${i}`,
        `must be an IP address, optionally with :port (IPv6 as [addr]:port): ${JSON.stringify(srv)}`,
      );
    }
  });
  listeners.forEach((l, i) => {
    if (l.auth === 'required' && accounts.size === 0)
      throw new ConfigError(`/listeners/${i}/auth`, 'auth: required needs at least one entry in /accounts');
  });
  if (cfg.limits.reservedForTrusted >= cfg.limits.maxConnections)
    throw new ConfigError('/limits/reservedForTrusted', 'must be below /limits/maxConnections');
  if (cfg.limits.auth.maxFailureDelayMs < cfg.limits.auth.failureDelayMs)
    throw new ConfigError(
      '/limits/auth/maxFailureDelay',
      'must not be shorter than /limits/auth/failureDelay',
    );
  if (cfg.queue.retry.maxMs < cfg.queue.retry.initialMs)
    throw new ConfigError('/queue/retry/max', 'must not be shorter than /queue/retry/initial');
  if (c.tls) {
    cfg.tls = {
      cert: sec(tlsDir, c.tls.certFile, '/tls/certFile'),
      key: sec(tlsDir, c.tls.keyFile, '/tls/keyFile'),
    };
  }
  // What the relay builds from the config at start and at every reload must not fail later: a config
  // that passes here but not there would pass --check, then fail to start (or be refused at each reload).
  try {
    new PoolManager(cfg.ipPools, Date.now);
  } catch (e) {
    throw new ConfigError('/ipPools', (e as Error).message);
  }
  try {
    new Shaper(cfg.shaping, Date.now);
  } catch (e) {
    throw new ConfigError('/shaping', (e as Error).message);
  }
  cfg.hash = hasher.update(JSON.stringify(doc)).digest('hex');
  return cfg;
}

/** A config file larger than this is refused unread (a Kubernetes ConfigMap or Secret holds at most 1 MiB). */
export const MAX_CONFIG_BYTES = 1024 * 1024;
/** yaml's maxAliasCount: how much alias (`*name`) expansion a config may do; refuses "billion laughs" documents. */
export const MAX_YAML_ALIASES = 100;
/**
 * Nesting a config may have (a real one has about 6 levels). Deeper YAML is refused before it is parsed:
 * the yaml package parses nesting by recursion and turns the stack overflow into an error, but at the
 * bottom of that recursion V8 itself can fail ("RegExpCompiler Allocation failed - process out of
 * memory") and abort the process: seen with 1,000 nested `[` parsed twice, as hot reload does.
 */
export const MAX_YAML_DEPTH = 64;

/** Reads at most `max` + 1 bytes of `file` (a FIFO or /dev/zero does not make it read forever). */
function readCapped(file: string, max: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(max + 1);
    let n = 0;
    while (n < buf.length) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got === 0) break;
      n += got;
    }
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * An upper bound of the nesting depth of a YAML text, from its tokens (cheap, no recursion): flow
 * collections are counted exactly; block nesting as the indentation levels open plus the indicators
 * (`-`, `?`, `:`) on the line. Stops once above `limit`.
 */
function yamlDepth(text: string, limit: number): number {
  const indents: number[] = [];
  let flow = 0;
  let onLine = 0;
  let indent = 0;
  let lineStart = true;
  let max = 0;
  for (const src of new Lexer().lex(text)) {
    const type = CST.tokenType(src);
    if (type === 'newline') {
      lineStart = true;
      indent = 0;
      onLine = 0;
      continue;
    }
    if (type === 'space') {
      if (lineStart) indent = src.length;
      continue;
    }
    if (type === 'flow-map-start' || type === 'flow-seq-start') flow++;
    else if (type === 'flow-map-end' || type === 'flow-seq-end') flow = Math.max(0, flow - 1);
    else if (type === 'seq-item-ind' || type === 'explicit-key-ind' || type === 'map-value-ind') {
      if (flow === 0) onLine++;
    } else if (type === 'doc-start') indents.length = 0;
    if (lineStart && type !== 'comment' && type !== 'byte-order-mark' && type !== 'doc-mode') {
      lineStart = false;
      while (indents.length && indents[indents.length - 1] >= indent) indents.pop();
      indents.push(indent);
    }
    max = Math.max(max, indents.length + onLine + flow);
    if (max > limit) break;
  }
  return max;
}

/** One line of a YAML error: the message without yaml's code frame, and where. */
function yamlProblem(message: string, pos: number | undefined, lines: LineCounter): string {
  const text = message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
  if (pos === undefined) return `not valid YAML: ${text}`;
  const { line, col } = lines.linePos(pos);
  return `not valid YAML at line ${line}, column ${col}: ${text}`;
}

/**
 * Parses the text of a config file (YAML, or JSON, which is YAML) into one document. Every problem is a
 * ConfigError for `/` of one line: a syntax error (with line and column), a duplicate key, more than one
 * document, an unknown tag, nesting deeper than MAX_YAML_DEPTH, more alias expansions than
 * MAX_YAML_ALIASES, an empty file. The result is not checked further (see resolveConfig).
 */
export function parseConfigText(text: string): unknown {
  if (yamlDepth(text, MAX_YAML_DEPTH) > MAX_YAML_DEPTH)
    throw new ConfigError('/', `not valid YAML: nested more than ${MAX_YAML_DEPTH} levels deep`);
  const lines = new LineCounter();
  let docs: YAML.Document.Parsed[];
  try {
    docs = YAML.parseAllDocuments(text, {
      lineCounter: lines,
      prettyErrors: false,
      uniqueKeys: true,
      logLevel: 'error', // no warnings on stderr: they are refused below
    }) as YAML.Document.Parsed[];
  } catch (e) {
    throw new ConfigError('/', yamlProblem((e as Error).message, undefined, lines));
  }
  if (docs.length === 0)
    throw new ConfigError('/', 'the file is empty: it needs a mapping with version: 1 and listeners');
  const problem = docs[0].errors[0] ?? docs[0].warnings[0];
  if (problem) throw new ConfigError('/', yamlProblem(problem.message, problem.pos[0], lines));
  if (docs.length > 1) {
    const { line } = lines.linePos(docs[1].range[0]);
    throw new ConfigError(
      '/',
      `not valid YAML: a second document starts at line ${line} (after ---); the config is one document`,
    );
  }
  let doc: unknown;
  try {
    doc = docs[0].toJS({ maxAliasCount: MAX_YAML_ALIASES });
  } catch (e) {
    const msg = (e as Error).message;
    throw new ConfigError(
      '/',
      /excessive alias count/i.test(msg)
        ? `not valid YAML: aliases (*name) expand too much (yaml's maxAliasCount ${MAX_YAML_ALIASES}; a "billion laughs" document?)`
        : yamlProblem(msg, undefined, lines),
    );
  }
  if (doc === null || doc === undefined)
    throw new ConfigError('/', 'the file holds no values: it needs a mapping with version: 1 and listeners');
  return doc;
}

/** Reads, parses and validates a config file; throws ConfigError naming the field and the reason. */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): RelayConfig {
  let data: Buffer;
  try {
    data = readCapped(file, MAX_CONFIG_BYTES);
  } catch (e) {
    throw new ConfigError('/', `cannot read config file ${file}: ${(e as Error).message}`);
  }
  if (data.length > MAX_CONFIG_BYTES)
    throw new ConfigError('/', `config file ${file} is larger than ${MAX_CONFIG_BYTES} bytes`);
  const doc = parseConfigText(data.toString('utf8'));
  return resolveConfig(doc, path.dirname(path.resolve(file)), env);
}
