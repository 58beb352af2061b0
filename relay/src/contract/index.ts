/**
 * The relay contract: everything the operator may use from the relay. The operator imports only this
 * module (eslint.config.js enforces it); the relay imports the same definitions.
 * - the config schema and its check (config-schema.ts), the document's type once the schema accepted it
 *   (config-raw.ts, derived from the schema), the typed config (config-types.ts), the full validation the
 *   relay runs at start, without files (validate.ts, on resolve.ts and its resolve-*.ts parts), durations
 *   (duration.ts);
 * - the admin API's requests and responses (admin-api.ts).
 */
export { CONFIG_SCHEMA, RATE_PATTERN, checkConfigSchema } from './config-schema.js';
export { validateRelayConfig, type SecretFiles, type ValidateOptions } from './validate.js';
export { DURATION_PATTERN, MAX_TIMER_MS, formatDuration, parseDuration } from './duration.js';
export type * from './admin-api.js';
export { DNS_CHECKS_MAX_BODY, DNS_CHECKS_MAX_DKIM, DNS_CHECKS_MAX_FCRDNS } from './admin-api.js';
export { ConfigError } from '../errors.js';
export { dkimDnsRecord, keyProblem, MIN_RSA_BITS } from './resolve-dkim.js';
export { LINT_RULES, type LintRule } from './lint-rules.js';
export { EVENT_TYPES, type EventType, type DeliveryEvent } from './events.js';
export { COMPLAINT_RATE_DEFAULTS } from './complaint-rate.js';
