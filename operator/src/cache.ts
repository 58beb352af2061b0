/**
 * The operator's view of the cluster: one typed informer cache per kind it reads, and the lookups both
 * controllers make in them. Reads only; the writes are in api-writer.ts.
 */
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { IpPool, SmtpRelay } from './api/types.js';
import { GROUP, VERSION, names } from './constants.js';
import type { KObject } from './objects.js';
import { startInformer, type Informer, type InformerEventType } from './runtime/informer.js';
import { dkimSecrets } from './relay/dkim.js';
import { webhookSecrets } from './relay/webhooks.js';

export type Pod = KObject & {
  spec: { nodeName?: string };
  status?: { podIP?: string; phase?: string; conditions?: { type: string; status: string }[] };
};
export type StatefulSet = KObject & {
  spec?: { replicas?: number };
  status?: { observedGeneration?: number; updateRevision?: string; currentRevision?: string };
};
export type Secret = KObject & { data?: Record<string, string> };

export interface Caches {
  relays: Informer<SmtpRelay>;
  pools: Informer<IpPool>;
  statefulsets: Informer<StatefulSet>;
  configmaps: Informer<KObject>;
  services: Informer<KObject>;
  pdbs: Informer<KObject>;
  pods: Informer<Pod>;
  secrets: Informer<Secret>;
}
export type CacheName = keyof Caches;

const MANAGED = 'app.kubernetes.io/managed-by=cartero-operator';
const RELAY_PODS = 'app.kubernetes.io/name=cartero-relay';

/** Starts every informer (one per namespace when `namespaces` is set) and returns them unsynced. */
export function startCaches(o: {
  kc: KubeConfig;
  namespaces?: string[];
  log: Logger;
  onEvent: (cache: CacheName, type: InformerEventType, obj: KubernetesObject) => void;
}): Caches {
  const inf = <T extends KubernetesObject>(
    name: CacheName,
    group: string,
    version: string,
    plural: string,
    labelSelector?: string,
  ): Informer<T> => {
    const namespaces = o.namespaces?.length ? o.namespaces : [undefined];
    const parts = namespaces.map((ns) =>
      startInformer<T>({
        kc: o.kc,
        path: apiPath(group, version, plural, ns),
        ...(labelSelector ? { labelSelector } : {}),
        onEvent: (type, obj) => o.onEvent(name, type, obj),
        log: o.log.child({ informer: name, ...(ns ? { namespace: ns } : {}) }),
      }),
    );
    return parts.length === 1 ? parts[0] : combine(parts);
  };
  return {
    relays: inf<SmtpRelay>('relays', GROUP, VERSION, 'smtprelays'),
    pools: inf<IpPool>('pools', GROUP, VERSION, 'ippools'),
    statefulsets: inf<StatefulSet>('statefulsets', 'apps', 'v1', 'statefulsets', MANAGED),
    configmaps: inf('configmaps', '', 'v1', 'configmaps', MANAGED),
    services: inf('services', '', 'v1', 'services', MANAGED),
    pdbs: inf('pdbs', 'policy', 'v1', 'poddisruptionbudgets', MANAGED),
    pods: inf<Pod>('pods', '', 'v1', 'pods', RELAY_PODS),
    secrets: inf<Secret>('secrets', '', 'v1', 'secrets'),
  };
}

function apiPath(group: string, version: string, plural: string, namespace?: string): string {
  const base = group === '' ? `/api/${version}` : `/apis/${group}/${version}`;
  return namespace ? `${base}/namespaces/${namespace}/${plural}` : `${base}/${plural}`;
}

/** Several namespaced informers of one kind, seen as one. */
function combine<T extends KubernetesObject>(parts: Informer<T>[]): Informer<T> {
  return {
    list: () => parts.flatMap((p) => p.list()),
    get: (namespace, name) => {
      for (const p of parts) {
        const o = p.get(namespace, name);
        if (o) return o;
      }
      return undefined;
    },
    synced: async () => {
      await Promise.all(parts.map((p) => p.synced()));
    },
    stop: () => parts.forEach((p) => p.stop()),
  };
}

export const isReady = (p: Pod) =>
  !p.metadata.deletionTimestamp &&
  !!p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');

/** The IpPools a relay's tenants send from. */
export function poolsOf(r: SmtpRelay): string[] {
  return [...new Set((r.spec?.tenants ?? []).map((t) => t.ipPool).filter((p): p is string => !!p))];
}

/** The Secrets a relay reads (its own, credentials, TLS): a change to one reconciles it. */
export function secretsOf(r: SmtpRelay): string[] {
  const s = new Set<string>([names(r.metadata.name!).secret]);
  for (const t of r.spec?.tenants ?? []) if (t.credentialsSecret) s.add(t.credentialsSecret);
  const routing = r.spec?.routing;
  if (routing?.default?.smarthost?.credentialsSecret) s.add(routing.default.smarthost.credentialsSecret);
  for (const d of routing?.domains ?? []) if (d.credentialsSecret) s.add(d.credentialsSecret);
  for (const b of routing?.backups ?? []) if (b.credentialsSecret) s.add(b.credentialsSecret);
  if (r.spec?.tls?.secretName) s.add(r.spec.tls.secretName);
  if (r.spec?.rateLimitStore?.credentialsSecret) s.add(r.spec.rateLimitStore.credentialsSecret);
  for (const d of dkimSecrets(r)) s.add(d);
  for (const w of webhookSecrets(r)) s.add(w);
  if (r.spec?.outboundTls?.caSecretRef?.name) s.add(r.spec.outboundTls.caSecretRef.name);
  return [...s];
}

/** A relay's pods, in ordinal order. */
export function podsOf(caches: Caches, ns: string, relay: string): Pod[] {
  return caches.pods
    .list()
    .filter((p) => p.metadata.namespace === ns && p.metadata.labels?.['app.kubernetes.io/instance'] === relay)
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name, 'en', { numeric: true }));
}
