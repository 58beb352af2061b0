/**
 * The config document as resolveRelayConfig reads it: parsed, checked against CONFIG_SCHEMA and with the
 * schema's defaults filled in (Ajv's useDefaults), part of the relay contract. The type is derived from
 * CONFIG_SCHEMA itself, so it cannot drift from what the schema admits: a property the schema requires
 * or gives a default is present, any other is optional; `enum` and `const` become unions of literals.
 * It covers the keywords CONFIG_SCHEMA uses (type, properties, required, default, items, enum, const);
 * the one `if`/`then` (routing.default: `smarthost` goes with `type: smarthost`) is left to the code.
 */
import type { CONFIG_SCHEMA } from './config-schema.js';

type Required_<S> = S extends { readonly required: readonly (infer R)[] } ? R : never;
type Defaulted<P> = { [K in keyof P]: P[K] extends { readonly default: unknown } ? K : never }[keyof P];
type Present<S, P> = Required_<S> | Defaulted<P>;
type Flat<T> = { [K in keyof T]: T[K] };

/** The value a schema (node) admits once validated with defaults applied. */
export type Validated<S> = S extends { readonly const: infer C }
  ? C
  : S extends { readonly enum: readonly (infer E)[] }
    ? E
    : S extends { readonly type: 'string' }
      ? string
      : S extends { readonly type: 'integer' | 'number' }
        ? number
        : S extends { readonly type: 'boolean' }
          ? boolean
          : S extends { readonly type: 'array'; readonly items: infer I }
            ? Validated<I>[]
            : S extends { readonly type: 'object'; readonly properties: infer P }
              ? Flat<
                  { -readonly [K in keyof P as K extends Present<S, P> ? K : never]: Validated<P[K]> } & {
                    -readonly [K in keyof P as K extends Present<S, P> ? never : K]?: Validated<P[K]>;
                  }
                >
              : unknown;

/** A whole config document after applySchema accepted it. */
export type ValidatedConfig = Validated<typeof CONFIG_SCHEMA>;

export type RawListener = ValidatedConfig['listeners'][number];
export type RawLimits = ValidatedConfig['limits'];
export type RawAccount = ValidatedConfig['accounts'][number];
export type RawTenant = ValidatedConfig['tenants'][number];
export type RawPool = ValidatedConfig['ipPools'][number];
export type RawRouting = ValidatedConfig['routing'];
/** A smarthost, domain route or backup: host, port, TLS mode and optional credentials. */
export type RawHostRoute = RawRouting['backups'][number];
export type RawRateLimitStore = NonNullable<ValidatedConfig['fleet']['rateLimitStore']>;
