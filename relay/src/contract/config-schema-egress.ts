/**
 * The egress parts of the relay config schema (config-schema.ts): `ipPools`, `shaping`, `peer`, `fleet`.
 */
import { MAX_PER_PERIOD, SECTION, dur, login } from './config-schema-base.js';
export const EGRESS_PROPERTIES = {
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
    description: 'The account relays of one fleet use with each other to hand off queued mail when draining.',
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
} as const;
