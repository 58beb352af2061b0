/** Abuse-resistance metrics: AUTH failures and lockouts, stress mode. Refusals count in cartero_smtp_rejected_total. */
import { Counter, Gauge, type Registry } from 'prom-client';

export interface AbuseMetrics {
  rejected: Counter<'listener' | 'reason'>;
  authFailures: Counter<'listener' | 'reason'>;
  authLockouts: Counter<'scope'>;
  stress: Gauge<'listener'>;
}

export function registerAbuseMetrics(
  r: Registry,
  rejected: Counter<'listener' | 'reason'>,
  locked: () => { clients: number; accounts: number },
): AbuseMetrics {
  new Gauge({
    name: 'cartero_auth_locked_clients',
    help: 'Client addresses (IPv6: /64s) whose AUTH is refused right now after too many failures.',
    registers: [r],
    collect() {
      this.set(locked().clients);
    },
  });
  new Gauge({
    name: 'cartero_auth_locked_accounts',
    help: 'Account names whose AUTH is refused right now after too many failures.',
    registers: [r],
    collect() {
      this.set(locked().accounts);
    },
  });
  return {
    rejected,
    authFailures: new Counter({
      name: 'cartero_auth_failures_total',
      help: 'Failed AUTH attempts: invalid (wrong password or unknown account), locked_client, locked_account.',
      labelNames: ['listener', 'reason'],
      registers: [r],
    }),
    authLockouts: new Counter({
      name: 'cartero_auth_lockouts_total',
      help: 'Locks started after too many AUTH failures, by scope (client address or account).',
      labelNames: ['scope'],
      registers: [r],
    }),
    stress: new Gauge({
      name: 'cartero_smtp_stress',
      help: 'Whether a listener is in stress mode (nearly full: shorter timeouts apply).',
      labelNames: ['listener'],
      registers: [r],
    }),
  };
}
