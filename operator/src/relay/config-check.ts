/**
 * The check of the relay config the operator rendered, before it is applied: the relay's own validation
 * (schema and every rule, through the relay contract), with the Secret's data and a stand-in POD_IP (any
 * address: 192.0.2.1, TEST-NET-1). A config the relay would refuse is not applied: the ConfigMap and the
 * Secret keep the last good pair, which the pods keep running (and restart with).
 */
import { validateRelayConfig } from '../../../relay/src/contract/index.js';
import type { Problem } from '../conditions.js';

export function checkRenderedConfig(
  doc: Record<string, unknown>,
  secretData: Record<string, string>,
): Problem | undefined {
  const invalid = validateRelayConfig(doc, { secrets: secretData, env: { POD_IP: '192.0.2.1' } });
  if (!invalid) return undefined;
  return {
    reason: 'InvalidConfig',
    message: `the relay would refuse the config rendered from the spec, so it is not applied (the relays keep the last good one): ${invalid.message}`,
  };
}
