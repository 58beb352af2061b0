/**
 * The check of the relay config the operator rendered, before it is applied. One function, so the relay
 * contract's full validator can replace the schema check here alone.
 */
import { checkConfigSchema } from '../../../relay/src/config.js';
import type { Problem } from '../builders.js';

export function checkRenderedConfig(doc: Record<string, unknown>): Problem | undefined {
  const invalid = checkConfigSchema(doc);
  if (!invalid) return undefined;
  return {
    reason: 'InvalidConfig',
    message: `the relay config rendered from the spec is invalid: ${invalid.message}`,
  };
}
