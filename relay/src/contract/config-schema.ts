/**
 * The relay config's JSON Schema (CONFIG_SCHEMA, the one source of truth: the relay validates its file
 * with it, the operator the config it renders) and its Ajv setup, part of the relay contract.
 * The declaration is split by part: building blocks (config-schema-base.ts), outbound TLS and feedback
 * sections (config-schema-sections.ts), tenants (config-schema-tenants.ts), egress pools, shaping, peer
 * and fleet (config-schema-egress.ts); the top level, in document order, stays here.
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
import {
  LISTENER_LIMITS,
  MAX_DISK_BYTES,
  MAX_PER_PERIOD,
  RATE_PATTERN,
  SECTION,
  cidr,
  dur,
  hostPort,
  login,
  tlsMode,
  withDefaults,
} from './config-schema-base.js';
import { FEEDBACK_SECTION, OUTBOUND_TLS_SECTION } from './config-schema-sections.js';
import { DURATION_PATTERN, parseDuration } from './duration.js';
import { TENANTS_SCHEMA } from './config-schema-tenants.js';
import { EGRESS_PROPERTIES } from './config-schema-egress.js';
import { Ajv, type ErrorObject } from 'ajv';
import { ConfigError } from '../errors.js';

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
    tenants: TENANTS_SCHEMA,
    ...EGRESS_PROPERTIES,
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
export { RATE_PATTERN } from './config-schema-base.js';
