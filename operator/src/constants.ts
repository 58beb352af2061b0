/**
 * What the operator's modules share: the API group and the operator's marks on objects (finalizer,
 * annotations, field manager), the names and labels of the objects it owns for an SmtpRelay, and
 * where things live inside a relay pod. Constants and pure helpers only; it imports nothing of the
 * operator, so every module may import it.
 */
import type { SmtpRelaySpec } from './api/types.js';

export const GROUP = 'cartero.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const FIELD_MANAGER = 'cartero-operator';
export const FINALIZER = 'cartero.io/drain';
export const ABANDON_ANNOTATION = 'cartero.io/abandon-queued-mail';
export const CONFIG_HASH_ANNOTATION = 'cartero.io/restart-hash';
export const POD_NAME_LABEL = 'statefulset.kubernetes.io/pod-name';
export const ADMIN_PORT = 9025;
export const PEER_USERNAME = 'cartero-peer';
/** The container port of the feedback listener (the relay runs as non-root; the Service maps 25 to it). */
export const FEEDBACK_PORT = 2526;

/** Where things live inside a relay pod. The config uses paths relative to its own folder. */
export const MOUNTS = {
  config: '/etc/cartero/config',
  secrets: '/etc/cartero/secrets',
  tls: '/etc/cartero/tls',
  spool: '/var/lib/cartero',
} as const;
export const CONFIG_KEY = 'relay.yaml';

export type Listener = NonNullable<SmtpRelaySpec['listeners']>[number];
export type Tenant = NonNullable<SmtpRelaySpec['tenants']>[number];

export const DEFAULT_LISTENERS: Listener[] = [
  { name: 'smtp', port: 25, containerPort: 2525, tls: 'none', auth: 'optional' },
  { name: 'submission', port: 587, containerPort: 5870, tls: 'none', auth: 'required' },
];

/** The port a listener binds in the pod: the relay runs as non-root, so ports below 1024 move up. */
export function containerPortOf(l: Listener): number {
  if (l.containerPort) return l.containerPort;
  if (l.port === 25) return 2525;
  if (l.port === 587) return 5870;
  if (l.port === 465) return 4650;
  return l.port >= 1024 ? l.port : 10000 + l.port;
}

/** The names of the objects the operator owns for the SmtpRelay `relay`. */
export const names = (relay: string) => ({
  config: `${relay}-config`,
  secret: `${relay}-secrets`,
  statefulSet: relay,
  headless: `${relay}-pods`,
  service: relay,
  pdb: relay,
  serviceMonitor: relay,
  /** The feedback listener's Service (port 25), when spec.feedback is set. */
  feedbackService: `${relay}-feedback`,
});

/** The pod names a StatefulSet of `n` replicas has. */
export function podNames(relay: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${relay}-${i}`);
}

export function selectorLabels(relay: string): Record<string, string> {
  return { 'app.kubernetes.io/name': 'cartero-relay', 'app.kubernetes.io/instance': relay };
}

export function commonLabels(relay: string): Record<string, string> {
  return {
    ...selectorLabels(relay),
    'app.kubernetes.io/component': 'relay',
    'app.kubernetes.io/part-of': 'cartero',
    'app.kubernetes.io/managed-by': 'cartero-operator',
  };
}

export function selectorString(relay: string): string {
  return Object.entries(selectorLabels(relay))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}
