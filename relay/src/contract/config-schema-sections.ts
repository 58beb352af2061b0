/**
 * Sections of the relay config schema (config-schema.ts) for outbound TLS policy and the feedback loop.
 */
import { HOSTNAME_PATTERN, SECTION, dur } from './config-schema-base.js';
// --- outbound TLS policy and MTA-STS (docs/adr/013-outbound-tls-policy.md) ---
/** A TLS level for delivery by MX (Postfix may / encrypt / verify). */
export const tlsLevel = { type: 'string', enum: ['opportunistic', 'required', 'verify'] } as const;
/** outboundTls: the TLS delivery by MX needs, per destination, and MTA-STS (RFC 8461). */
export const OUTBOUND_TLS_SECTION = {
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
export const DOMAIN_PATTERN =
  '^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$';
/** tenants[].returnPath: the envelope sender becomes `<prefix>+<token>@<domain>` on the way out. */
export const RETURN_PATH = {
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
export const FEEDBACK_ADDRESS = {
  type: 'string',
  maxLength: 254,
  pattern:
    "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$",
  description:
    "The address registered with the mailbox providers' feedback loops; the feedback listener accepts ARF reports for it.",
} as const;
/** feedback: the token key and the inbound bounce and feedback listener. */
export const FEEDBACK_SECTION = {
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
    peerLookup: {
      type: 'object',
      additionalProperties: false,
      required: ['host', 'port'],
      description:
        "Where to ask the fleet's other relays for a sent message this relay did not accept (docs/adr/020-sent-message-index.md): a DNS name resolving to every relay (the StatefulSet's headless Service) and their admin port, asked with this relay's admin token.",
      properties: {
        host: {
          type: 'string',
          maxLength: 253,
          pattern: `(${HOSTNAME_PATTERN})|(^[0-9A-Fa-f:.]{2,45}$)`,
          description: 'A DNS name (resolved through dns.servers) or one IP address.',
        },
        port: { type: 'integer', minimum: 1, maximum: 65535 },
        timeout: {
          ...dur('30s', { min: '100ms' }),
          default: '2s',
          description: 'How long one relay may take to answer.',
        },
        maxPeers: {
          type: 'integer',
          minimum: 1,
          maximum: 256,
          default: 32,
          description: 'Relays asked at most (the first addresses the name resolves to).',
        },
      },
    },
  },
} as const;
// --- end feedback loop ---
