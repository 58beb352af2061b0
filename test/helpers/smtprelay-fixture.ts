/**
 * An SmtpRelay object for the operator's unit tests: `mail` in namespace `team`, one plain SMTP listener,
 * and the rest of the spec as given.
 */
import type { SmtpRelay } from '../../operator/src/api/types.js';

export function smtpRelayFixture(spec: Partial<NonNullable<SmtpRelay['spec']>>): SmtpRelay {
  return {
    apiVersion: 'cartero.io/v1alpha1',
    kind: 'SmtpRelay',
    metadata: { name: 'mail', namespace: 'team', uid: 'u-1', generation: 1 },
    spec: { listeners: [{ name: 'smtp', port: 25, tls: 'none', auth: 'optional' }], ...spec },
  } as SmtpRelay;
}
