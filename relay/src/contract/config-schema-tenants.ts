/**
 * The `tenants` part of the relay config schema (config-schema.ts): one entry per sender sharing the relay.
 */
import {
  HOSTNAME_PATTERN,
  MAX_DISK_BYTES,
  MAX_PER_PERIOD,
  RATE_PATTERN,
  SECTION,
  SELECTOR_PATTERN,
  cidr,
  dur,
  login,
} from './config-schema-base.js';
import { FEEDBACK_ADDRESS, RETURN_PATH } from './config-schema-sections.js';
import { EVENT_TYPES } from './events.js';
export const TENANTS_SCHEMA = {
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
} as const;
