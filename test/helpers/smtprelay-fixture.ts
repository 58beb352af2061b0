/**
 * An SmtpRelay object for the operator's unit tests (`mail` in namespace `team`, one plain SMTP listener,
 * and the rest of the spec as given), and the input buildRelayConfig renders it from.
 */
import type { SmtpRelay } from '../../operator/src/api/types.js';
import type { BuildInput } from '../../operator/src/relay/config-render.js';

export function smtpRelayFixture(spec: Partial<NonNullable<SmtpRelay['spec']>>): SmtpRelay {
  return {
    apiVersion: 'cartero.io/v1alpha1',
    kind: 'SmtpRelay',
    metadata: { name: 'mail', namespace: 'team', uid: 'u-1', generation: 1 },
    spec: { listeners: [{ name: 'smtp', port: 25, tls: 'none', auth: 'optional' }], ...spec },
  } as SmtpRelay;
}

/** What buildRelayConfig renders `relay` from: no credentials, pools or allocations, one replica, and `extra`. */
export function buildInputFixture(relay: SmtpRelay, extra: Partial<BuildInput> = {}): BuildInput {
  return {
    relay,
    defaultImage: 'cartero:test',
    credentials: new Map(),
    pools: new Map(),
    allocations: [],
    adminToken: 'admin',
    peerPassword: 'peer',
    replicas: 1,
    ...extra,
  };
}
