/**
 * The relay config's JSON Schema (CONFIG_SCHEMA, the one source of truth: the relay validates its file
 * with it, the operator the config it renders) and its Ajv setup, part of the relay contract.
 * Over 500 lines on purpose: it is one declaration (data, not logic), read top to bottom with
 * docs/config.md; splitting it by section would scatter the bounds the tests walk.
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
 *   number or duration field without one.
 */
import { Ajv, type ErrorObject } from 'ajv';
import { ConfigError } from '../errors.js';
import { DURATION_PATTERN, MAX_TIMER_MS, parseDuration } from './duration.js';
import { EVENT_TYPES } from './events.js';

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
  enum: ['opportunistic', 'required', 'verify', 'none', 'implicit'],
  description:
    'opportunistic: STARTTLS when offered (certificate not verified, as MTAs do); required and verify: STARTTLS with a certificate verified for the host (system CAs plus outboundTls.caFile) or defer; none: never; implicit: TLS from the first byte (port 465).',
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
/** A domain name of two labels or more (DKIM signing domains). */
const HOSTNAME_PATTERN =
  '^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$';
/** A DKIM selector: one or more DNS labels. */
const SELECTOR_PATTERN =
  '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$';
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

/**
 * A section of settings (an object): no unknown keys, and absent means `{}`, so that the defaults of its
 * fields apply.
 */
const SECTION = { type: 'object', additionalProperties: false, default: {} } as const;

/** `props` with a `default` added to those `defaults` names (the type says so too: see ValidatedConfig). */
function withDefaults<T extends Record<string, object>, D extends { [K in keyof T]?: unknown }>(
  props: T,
  defaults: D,
): { [K in keyof T]: K extends keyof D ? T[K] & { readonly default: D[K] } : T[K] } {
  return Object.fromEntries(
    Object.entries(props).map(([k, v]) => [k, k in defaults ? { ...v, default: defaults[k] } : v]),
  ) as { [K in keyof T]: K extends keyof D ? T[K] & { readonly default: D[K] } : T[K] };
}

// --- outbound TLS policy and MTA-STS (docs/adr/013-outbound-tls-policy.md) ---
/** A TLS level for delivery by MX (Postfix may / encrypt / verify). */
const tlsLevel = { type: 'string', enum: ['opportunistic', 'required', 'verify'] } as const;
/** outboundTls: the TLS delivery by MX needs, per destination, and MTA-STS (RFC 8461). */
const OUTBOUND_TLS_SECTION = {
  ...SECTION,
  description:
    'TLS for delivery by MX: a default level, per-destination levels and MTA-STS. Static routes keep their own tls.',
  properties: {
    level: {
      ...tlsLevel,
      default: 'opportunistic',
      description:
        'opportunistic: STARTTLS when offered, unverified; required: STARTTLS or defer (unverified); verify: STARTTLS with a certificate valid for the MX host name or defer.',
    },
    caFile: {
      type: 'string',
      minLength: 1,
      description:
        'PEM CA certificates under paths.secrets, trusted besides the system CAs for verify, route TLS and MTA-STS policy fetches.',
    },
    policies: {
      type: 'array',
      default: [],
      maxItems: 10_000,
      description:
        'Per recipient domain: `example.com` (exact) or `.example.com` (its subdomains); an exact entry wins, then the nearest parent. Replaces level for that destination.',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['domain', 'level'],
        properties: {
          domain: {
            type: 'string',
            maxLength: 254,
            pattern:
              '^\\.?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$',
          },
          level: tlsLevel,
        },
      },
    },
    mtaSts: {
      ...SECTION,
      description: 'MTA-STS (RFC 8461) for delivery by MX.',
      properties: {
        enabled: { type: 'boolean', default: true },
        fetchTimeout: {
          ...dur('1m', { min: '100ms' }),
          default: '10s',
          description:
            'The policy fetch (address lookup, connect, TLS, 64 KiB at most) must end within this.',
        },
        recheckInterval: {
          ...dur('1d', { min: '1s' }),
          default: '5m',
          description:
            'How often the _mta-sts TXT id of a cached policy, or the absence of a policy, is checked again.',
        },
        cacheMaxEntries: { type: 'integer', minimum: 1, maximum: 1_000_000, default: 10_000 },
        port: {
          type: 'integer',
          minimum: 1,
          maximum: 65535,
          default: 443,
          description: 'Test only: the HTTPS port policies are fetched from.',
        },
      },
    },
  },
} as const;
// --- end outbound TLS policy ---

// --- the feedback loop (relay/src/feedback/, docs/adr/016-feedback-loop.md) ---
/** A domain name (no trailing dot): a tenant's bounce domain. */
const DOMAIN_PATTERN =
  '^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$';
/** tenants[].returnPath: the envelope sender becomes `<prefix>+<token>@<domain>` on the way out. */
const RETURN_PATH = {
  type: 'object',
  additionalProperties: false,
  required: ['domain'],
  description:
    'Return-path tagging (VERP): the envelope sender of delivered mail becomes <prefix>+<token>@<domain>, so asynchronous bounces come back to the feedback listener. Use a subdomain of the From domain (SPF alignment) whose MX is the fleet. Needs feedback.tokenKeyFile.',
  properties: {
    domain: { type: 'string', maxLength: 253, pattern: DOMAIN_PATTERN },
    prefix: {
      type: 'string',
      pattern: '^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$',
      default: 'bounce',
      description: 'Local part before the +; at most 15 characters, so the address fits 64 octets.',
    },
  },
} as const;
/** tenants[].feedbackAddress: where the tenant's provider feedback loops (ARF reports) are sent. */
const FEEDBACK_ADDRESS = {
  type: 'string',
  maxLength: 254,
  pattern:
    "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$",
  description:
    "The address registered with the mailbox providers' feedback loops; the feedback listener accepts ARF reports for it.",
} as const;
/** feedback: the token key and the inbound bounce and feedback listener. */
const FEEDBACK_SECTION = {
  ...SECTION,
  description: 'Asynchronous bounces and complaints (ARF): the return-path token key and the listener.',
  properties: {
    tokenKeyFile: {
      type: 'string',
      minLength: 1,
      description:
        'File under paths.secrets with the key (at least 16 bytes) that authenticates return-path tokens; one key per fleet.',
    },
    tokenTtl: {
      ...dur('365d', { min: '1d', timer: false }),
      default: '30d',
      description: 'How long after sending a return-path token is still taken (whole days).',
    },
    listener: {
      type: 'object',
      additionalProperties: false,
      description:
        'The inbound bounce and feedback listener (port 25 in production): no AUTH, only the bounce domains and feedback addresses; it parses and never relays.',
      properties: {
        address: {
          type: 'string',
          default: '127.0.0.1',
          description: 'IP to bind; ${POD_IP} style references to the environment are expanded.',
        },
        port: { type: 'integer', minimum: 0, maximum: 65535, default: 25 },
        maxMessageSize: {
          type: 'integer',
          minimum: 1024,
          maximum: 10 * 1024 * 1024,
          default: 1024 * 1024,
          description: 'Reports larger than this are refused (552).',
        },
        timeout: {
          ...dur('10m', { min: '1s' }),
          default: '2m',
          description: 'A connection is closed this long after it opened, whatever it does.',
        },
        maxConnections: { type: 'integer', minimum: 1, maximum: 10_000, default: 100 },
      },
    },
    unmatchedKeep: {
      type: 'integer',
      minimum: 0,
      maximum: 1000,
      default: 100,
      description:
        'Reports that matched nothing kept in memory (each cut to 64 KiB) for GET /feedback/unmatched.',
    },
  },
} as const;
// --- end feedback loop ---

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
      ...SECTION,
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
        ...login,
        properties: { ...login.properties, tenant: { type: 'string', minLength: 1, default: 'default' } },
      },
    },
    limits: {
      ...SECTION,
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
          ...SECTION,
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
          ...SECTION,
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
      ...SECTION,
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
          ...SECTION,
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
      ...SECTION,
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
      ...SECTION,
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
      ...SECTION,
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
        // ---- DNS identity checks (relay/src/identity/) ----
        identityCheckInterval: {
          ...dur('24h', { min: '10s' }),
          default: '1h',
          description:
            'How often the relay checks the forward-confirmed reverse DNS of its pool addresses (also at start and after each reload).',
        },
      },
    },
    // --- outbound TLS policy and MTA-STS (docs/adr/013-outbound-tls-policy.md) ---
    outboundTls: OUTBOUND_TLS_SECTION,
    feedback: FEEDBACK_SECTION,
    // --- end outbound TLS policy ---
    // --- delivery events outbox (relay/src/events/, docs/events.md) ---
    events: {
      ...SECTION,
      description: 'The durable outbox of delivery events (<spool>/events) and webhook delivery.',
      properties: {
        maxBytes: {
          type: 'integer',
          minimum: 1024 * 1024,
          maximum: MAX_DISK_BYTES,
          default: 256 * 1024 * 1024,
          description: 'Bytes of event segments on disk; beyond, new events are dropped and counted.',
        },
        flushInterval: { ...dur('10s', { min: '1ms' }), default: '50ms' },
        maxBuffered: { type: 'integer', minimum: 1, maximum: 1_000_000, default: 10_000 },
        concurrency: { type: 'integer', minimum: 1, maximum: 256, default: 8 },
      },
    },
    // --- end delivery events outbox ---
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
            ...SECTION,
            properties: {
              messages: { type: 'integer', minimum: 1, maximum: 10_000_000 },
              bytes: { type: 'integer', minimum: 1, maximum: MAX_DISK_BYTES },
            },
          },
          bounceRate: {
            ...SECTION,
            properties: {
              warn: { type: 'number', minimum: 0, maximum: 1, default: 0.05 },
              pause: { type: 'number', minimum: 0, maximum: 1, default: 0.1 },
              window: { ...dur('30d', { min: '1m', timer: false }), default: '1h' },
              minVolume: { type: 'integer', minimum: 1, maximum: MAX_PER_PERIOD, default: 100 },
              cooldown: { ...dur('30d', { timer: false }), default: '1h' },
            },
          },
          // the complaint-rate guard (ADR 018): complaints over delivered recipients
          complaintRate: {
            ...SECTION,
            properties: {
              warn: { type: 'number', minimum: 0, maximum: 1, default: 0.001 },
              pause: { type: 'number', minimum: 0, maximum: 1, default: 0.003 },
              window: { ...dur('30d', { min: '1m', timer: false }), default: '24h' },
              minVolume: { type: 'integer', minimum: 1, maximum: MAX_PER_PERIOD, default: 1000 },
              cooldown: { ...dur('30d', { timer: false }), default: '24h' },
            },
          },
          suppression: {
            ...SECTION,
            properties: {
              enabled: { type: 'boolean', default: true },
              ttl: { ...dur('3650d', { min: '1s', timer: false }), default: '30d' },
            },
          },
          dkim: {
            type: 'object',
            additionalProperties: false,
            required: ['keys'],
            description:
              'DKIM signing at acceptance: the keys of the From domain (or its nearest parent with keys) sign.',
            properties: {
              keys: {
                type: 'array',
                minItems: 1,
                maxItems: 32,
                items: {
                  type: 'object',
                  additionalProperties: false,
                  required: ['domain', 'selector', 'privateKeyFile'],
                  properties: {
                    domain: { type: 'string', maxLength: 253, pattern: HOSTNAME_PATTERN },
                    selector: { type: 'string', maxLength: 63, pattern: SELECTOR_PATTERN },
                    algorithm: {
                      type: 'string',
                      enum: ['rsa-sha256', 'ed25519-sha256'],
                      default: 'rsa-sha256',
                    },
                    privateKeyFile: {
                      type: 'string',
                      minLength: 1,
                      description: 'PEM private key (PKCS#8 or PKCS#1), in paths.secrets.',
                    },
                  },
                },
              },
              unmatched: {
                type: 'string',
                enum: ['send', 'refuse'],
                default: 'send',
                description:
                  'Mail whose From domain has no key: send it unsigned, or refuse it at DATA (550 5.7.1).',
              },
              expiry: dur('3650d', { min: '1h', timer: false }),
            },
          },
          returnPath: RETURN_PATH, // the feedback loop
          feedbackAddress: FEEDBACK_ADDRESS,
          // --- bulk-sender lint (relay/src/lint/, ADR 014)
          bulk: {
            type: 'boolean',
            default: false,
            description:
              'A bulk sender: its mail must carry one-click unsubscribe (RFC 8058), checked by the lint.',
          },
          lint: {
            ...SECTION,
            description: 'The bulk-sender lint of each accepted message (DKIM alignment, SPF, headers).',
            properties: {
              policy: {
                type: 'string',
                enum: ['report', 'enforce'],
                default: 'report',
                description:
                  'report: accept and count (metric, GET /lint); enforce: refuse at DATA with 550 5.7.x naming the rules.',
              },
            },
          },
          // --- delivery events and webhooks (relay/src/events/, docs/events.md, ADR 017)
          webhooks: {
            type: 'array',
            default: [],
            maxItems: 8,
            description: "Endpoints that receive this tenant's delivery events, signed and batched.",
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['url', 'secretFile'],
              properties: {
                url: { type: 'string', maxLength: 2048, pattern: '^https?://[^\\s]+$' },
                secretFile: {
                  type: 'string',
                  minLength: 1,
                  description: 'File under paths.secrets holding the HMAC-SHA256 signing key.',
                },
                events: {
                  type: 'array',
                  minItems: 1,
                  uniqueItems: true,
                  items: { type: 'string', enum: EVENT_TYPES },
                  default: [...EVENT_TYPES],
                },
                batchSize: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
                timeout: { ...dur('5m', { min: '100ms' }), default: '10s' },
                retryFor: { ...dur('7d', { min: '1s', timer: false }), default: '24h' },
              },
            },
          },
          // --- end delivery events
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
      ...SECTION,
      properties: {
        defaults: {
          ...SECTION,
          properties: {
            maxConnections: {
              type: 'integer',
              minimum: 1,
              maximum: 10_000,
              description: 'Connections per destination; default: delivery.perDestinationConcurrency.',
            },
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
          ...SECTION,
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
      ...SECTION,
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
      ...SECTION,
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
      ...SECTION,
      properties: { gracePeriod: { ...dur('1h'), default: '30s' } },
    },
    logging: {
      ...SECTION,
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
 * Validates `doc` against CONFIG_SCHEMA in place (Ajv fills in the defaults) and returns the first problem,
 * or undefined. resolveRelayConfig runs it first; checkConfigSchema runs it on a copy.
 */
export function applySchema(doc: unknown): ConfigError | undefined {
  return validate(doc) ? undefined : describe(validate.errors![0]);
}

/**
 * Checks a config document against CONFIG_SCHEMA only (no files read, no cross-field checks) and returns
 * the first problem, or undefined. The operator uses it on the config it renders. `doc` is not changed.
 */
export function checkConfigSchema(doc: unknown): ConfigError | undefined {
  return applySchema(structuredClone(doc));
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
