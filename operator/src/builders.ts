/**
 * Pure builders: from an SmtpRelay (and what the reconciler read beside it) to the objects the operator
 * applies. No I/O here; test/unit/operator-builders.test.ts covers them without an API server.
 */
import { createHash } from 'node:crypto';
import YAML from 'yaml';
import type { IpPool, SmtpRelay, SmtpRelaySpec } from './api/types.js';
import { CONFIG_SCHEMA, parseDuration } from '../../relay/src/contract/index.js';

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

/** Where things live inside a relay pod. The config uses paths relative to its own folder. */
export const MOUNTS = {
  config: '/etc/cartero/config',
  secrets: '/etc/cartero/secrets',
  tls: '/etc/cartero/tls',
  spool: '/var/lib/cartero',
} as const;
export const CONFIG_KEY = 'relay.yaml';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type KObject = { apiVersion: string; kind: string; metadata: Record<string, any>; [k: string]: any };
export type Listener = NonNullable<SmtpRelaySpec['listeners']>[number];
export type Tenant = NonNullable<SmtpRelaySpec['tenants']>[number];

/** Credentials the reconciler read from the Secrets an SmtpRelay names (`credentialsSecret`). */
export interface Credentials {
  username: string;
  password: string;
}

/** One allocated egress address (from an IpPool's status) for one pod of this relay. */
export interface Allocation {
  pool: string;
  ip: string;
  pod: string;
}

export interface BuildInput {
  relay: SmtpRelay;
  /** Image when the spec has none: the one the operator was installed with. */
  defaultImage: string;
  /** Secrets the spec names, by Secret name; a missing one is absent. */
  credentials: Map<string, Credentials>;
  /** The pools the tenants name, by name; a missing one is absent. */
  pools: Map<string, IpPool>;
  /** Addresses allocated to this relay's pods. */
  allocations: Allocation[];
  /** Kept in the operator-owned Secret across reconciles; generated once. */
  adminToken: string;
  peerPassword: string;
  /** Replicas the relay config is rendered for (rate-limit shares). */
  replicas: number;
}

export const DEFAULT_LISTENERS: Listener[] = [
  { name: 'smtp', port: 25, containerPort: 2525, tls: 'none', auth: 'optional' },
  { name: 'submission', port: 587, containerPort: 5870, tls: 'none', auth: 'required' },
];

export function containerPortOf(l: Listener): number {
  if (l.containerPort) return l.containerPort;
  if (l.port === 25) return 2525;
  if (l.port === 587) return 5870;
  if (l.port === 465) return 4650;
  return l.port >= 1024 ? l.port : 10000 + l.port;
}

export const names = (relay: string) => ({
  config: `${relay}-config`,
  secret: `${relay}-secrets`,
  statefulSet: relay,
  headless: `${relay}-pods`,
  service: relay,
  pdb: relay,
  serviceMonitor: relay,
});

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

function meta(relay: SmtpRelay, name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    namespace: relay.metadata.namespace,
    labels: commonLabels(relay.metadata.name!),
    ownerReferences: [
      {
        apiVersion: API_VERSION,
        kind: 'SmtpRelay',
        name: relay.metadata.name,
        uid: relay.metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ],
    ...extra,
  };
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

function rateList(r: Tenant['rateLimits']): string[] {
  if (!r) return [];
  const out: string[] = [];
  if (r.perSecond) out.push(`${r.perSecond}/s`);
  if (r.perMinute) out.push(`${r.perMinute}/m`);
  if (r.perHour) out.push(`${r.perHour}/h`);
  if (r.perDay) out.push(`${r.perDay}/d`);
  return out;
}

/** Secret file names in the operator-owned Secret. */
export const secretKeys = {
  admin: 'admin.token',
  peer: 'peer.password',
  tenant: (t: string) => `tenant-${t}.password`,
  route: (secret: string) => `route-${secret}.password`,
  rateLimitStore: 'ratelimit-store.password',
};

/** Problems a human must fix; reported in conditions and events, never thrown. */
export interface Problem {
  reason: string;
  message: string;
}

export interface RelayConfigResult {
  doc: Record<string, unknown>;
  problems: Problem[];
  /** Data of the operator-owned Secret (file name → content). */
  secretData: Record<string, string>;
}

const LIMIT_DEFAULTS = CONFIG_SCHEMA.properties.limits.properties;

/**
 * What the relay refuses in spec.limits beyond its schema (relay/src/contract/resolve.ts, resolveRelayConfig), with the
 * relay's defaults for what the spec leaves out. The CRD's CEL rule says the first one at admission.
 */
export function limitsProblems(limits: SmtpRelaySpec['limits']): Problem[] {
  const l = limits ?? {};
  const out: Problem[] = [];
  const maxConnections = l.maxConnections ?? LIMIT_DEFAULTS.maxConnections.default;
  if (l.reservedForTrusted !== undefined && l.reservedForTrusted >= maxConnections)
    out.push({
      reason: 'InvalidSpec',
      message: `limits.reservedForTrusted (${l.reservedForTrusted}) must be below limits.maxConnections (${maxConnections})`,
    });
  const auth = LIMIT_DEFAULTS.auth.properties;
  const delay = l.auth?.failureDelay ?? auth.failureDelay.default;
  const maxDelay = l.auth?.maxFailureDelay ?? auth.maxFailureDelay.default;
  try {
    if (parseDuration(maxDelay) < parseDuration(delay))
      out.push({
        reason: 'InvalidSpec',
        message: `limits.auth.maxFailureDelay (${maxDelay}) must not be shorter than limits.auth.failureDelay (${delay})`,
      });
  } catch {
    // not a duration: the CRD's pattern refuses it, and the relay schema check reports it
  }
  return out;
}

/**
 * Renders the relay config (CONFIG_SCHEMA of relay/src/contract/config-schema.ts) for the whole fleet. Every pod reads
 * the same file; pool addresses name the pod they belong to.
 */
export function buildRelayConfig(input: BuildInput): RelayConfigResult {
  const { relay } = input;
  const spec = relay.spec;
  const name = relay.metadata.name!;
  const ns = relay.metadata.namespace!;
  const problems: Problem[] = limitsProblems(spec.limits);
  const secretData: Record<string, string> = {
    [secretKeys.admin]: input.adminToken,
    [secretKeys.peer]: input.peerPassword,
  };
  const listeners = (spec.listeners ?? DEFAULT_LISTENERS).map((l) => ({
    name: l.name,
    address: '${POD_IP}',
    port: containerPortOf(l),
    tls: l.tls ?? 'none',
    auth: l.auth ?? 'optional',
    // the listener's client limits, over spec.limits (the relay merges them; a reload applies them)
    ...(l.limits && Object.keys(l.limits).length ? { limits: l.limits } : {}),
  }));
  const route = (
    r: { host: string; port?: number; tls?: string; credentialsSecret?: string },
    where: string,
  ): Record<string, unknown> => {
    const out: Record<string, unknown> = { host: r.host, port: r.port ?? 25, tls: r.tls ?? 'opportunistic' };
    if (r.credentialsSecret) {
      const c = input.credentials.get(r.credentialsSecret);
      if (!c) {
        problems.push({
          reason: 'SecretMissing',
          message: `${where}: Secret ${r.credentialsSecret} (keys username, password) not found or incomplete`,
        });
      } else {
        secretData[secretKeys.route(r.credentialsSecret)] = c.password;
        out.credentials = { username: c.username, passwordFile: secretKeys.route(r.credentialsSecret) };
      }
    }
    return out;
  };
  const usernames = new Set<string>();
  const usedPools = new Set<string>();
  const tenants = (spec.tenants ?? []).map((t) => {
    const out: Record<string, unknown> = { name: t.name };
    if (t.credentialsSecret) {
      const c = input.credentials.get(t.credentialsSecret);
      if (!c) {
        problems.push({
          reason: 'SecretMissing',
          message: `tenant ${t.name}: Secret ${t.credentialsSecret} (keys username, password) not found or incomplete; the tenant cannot authenticate`,
        });
      } else if (usernames.has(c.username) || c.username === PEER_USERNAME) {
        problems.push({
          reason: 'DuplicateAccount',
          message: `tenant ${t.name}: username ${c.username} from Secret ${t.credentialsSecret} is used by another tenant`,
        });
      } else {
        usernames.add(c.username);
        secretData[secretKeys.tenant(t.name)] = c.password;
        out.accounts = [{ username: c.username, passwordFile: secretKeys.tenant(t.name) }];
      }
    }
    if (t.trustedNetworks?.length) out.trustedNetworks = t.trustedNetworks;
    if (t.senderDomains?.length) out.senderDomains = t.senderDomains;
    const rates = rateList(t.rateLimits);
    if (rates.length) out.rateLimits = rates;
    if (t.rateLimits?.burst) out.burst = t.rateLimits.burst;
    if (t.quota && (t.quota.messages || t.quota.bytes)) out.quota = t.quota;
    if (t.bounceRate && Object.keys(t.bounceRate).length) out.bounceRate = t.bounceRate;
    if (t.maxAge) out.maxAge = t.maxAge;
    if (t.ipPool) {
      const pool = input.pools.get(t.ipPool);
      const mine = input.allocations.filter((a) => a.pool === t.ipPool);
      if (!pool) {
        problems.push({ reason: 'IpPoolMissing', message: `tenant ${t.name}: IpPool ${t.ipPool} not found` });
      } else if (mine.length === 0 && pool.spec.mode !== 'HostNetwork') {
        // No address for any pod of this relay yet: the controller holds new pods back until there is
        // one (the IpPool reports an exhausted pool). Rendered without the pool meanwhile.
      } else {
        out.ipPool = t.ipPool;
        usedPools.add(t.ipPool);
      }
    }
    return out;
  });
  const ipPools = [...usedPools].sort().map((p) => {
    const pool = input.pools.get(p)!;
    const bind = (pool.spec.mode ?? 'PodNetwork') !== 'CiliumEgressGateway';
    if (pool.spec.mode === 'HostNetwork') {
      // the address depends on the node a pod lands on: each relay keeps its node's (NODE_NAME)
      const addresses = pool.spec.addresses
        .filter((a) => a.node)
        .map((a) => ({
          ip: a.ip,
          ehlo: a.ehlo,
          ...(a.perHour ? { perHour: a.perHour } : {}),
          ...(a.perDay ? { perDay: a.perDay } : {}),
          node: a.node,
        }));
      return { name: p, addresses, ...(pool.spec.warmup ? { warmup: pool.spec.warmup } : {}) };
    }
    const addresses = input.allocations
      .filter((a) => a.pool === p)
      .sort((a, b) => a.pod.localeCompare(b.pod, 'en', { numeric: true }))
      .map((a) => {
        const spec = pool.spec.addresses.find((x) => x.ip === a.ip)!;
        return {
          ip: a.ip,
          ehlo: spec.ehlo,
          ...(spec.perHour ? { perHour: spec.perHour } : {}),
          ...(spec.perDay ? { perDay: spec.perDay } : {}),
          pod: a.pod,
          ...(bind ? {} : { bind: false }),
        };
      });
    return { name: p, addresses, ...(pool.spec.warmup ? { warmup: pool.spec.warmup } : {}) };
  });
  const q = spec.queue ?? {};
  const queue: Record<string, unknown> = {};
  if (q.maxMessages) queue.maxMessages = q.maxMessages;
  if (q.retry && Object.keys(q.retry).length) queue.retry = q.retry;
  queue.maxAge = q.maxAge ?? '5d';
  if (q.delayWarningAfter) queue.delayWarningAfter = q.delayWarningAfter;
  const routing: Record<string, unknown> = {};
  const def = spec.routing?.default;
  if (def?.type === 'smarthost' && def.smarthost) {
    routing.default = { type: 'smarthost', smarthost: route(def.smarthost, 'routing.default.smarthost') };
  } else {
    routing.default = { type: 'mx' };
  }
  if (spec.routing?.domains?.length)
    routing.domains = spec.routing.domains.map((d, i) => ({
      domain: d.domain,
      ...route(d, `routing.domains[${i}]`),
    }));
  if (spec.routing?.backups?.length)
    routing.backups = spec.routing.backups.map((b, i) => route(b, `routing.backups[${i}]`));
  const grace = spec.terminationGracePeriodSeconds ?? 120;
  const doc: Record<string, unknown> = {
    version: 1,
    hostname: spec.hostname ?? `${name}.${ns}.svc`,
    // relative to this file's folder (/etc/cartero/config), so the tree also works under a test kubelet
    paths: {
      root: '../../..',
      spool: `${MOUNTS.spool.slice(1)}/spool`,
      secrets: MOUNTS.secrets.slice(1),
      tls: MOUNTS.tls.slice(1),
    },
    listeners,
    ...(spec.tls ? { tls: { certFile: 'tls.crt', keyFile: 'tls.key' } } : {}),
    ...(spec.trustedNetworks?.length ? { trustedNetworks: spec.trustedNetworks } : {}),
    ...(spec.limits && Object.keys(spec.limits).length ? { limits: spec.limits } : {}),
    queue,
    ...(spec.delivery && Object.keys(spec.delivery).length ? { delivery: spec.delivery } : {}),
    routing,
    ...(spec.dns && Object.keys(spec.dns).length ? { dns: spec.dns } : {}),
    tenants,
    ipPools,
    fleet: { rateLimitShare: rateShare(input.replicas), ...rateLimitStore(input, secretData, problems) },
    peer: { username: PEER_USERNAME, passwordFile: secretKeys.peer },
    admin: { address: '${POD_IP}', port: ADMIN_PORT, tokenFile: secretKeys.admin },
    shutdown: { gracePeriod: `${Math.max(grace - 10, 5)}s` },
    logging: { level: spec.logLevel ?? 'info' },
  };
  // The revision names what was rendered, secrets included, so the status can tell which relays run it.
  (doc.fleet as Record<string, unknown>).revision = sha256(
    JSON.stringify(doc) + JSON.stringify(Object.entries(secretData).sort()),
  ).slice(0, 16);
  return { doc, problems, secretData };
}

/** The relay's fleet.rateLimitStore for spec.rateLimitStore (docs/adr/009-fleet-rate-limits.md). */
function rateLimitStore(
  input: BuildInput,
  secretData: Record<string, string>,
  problems: Problem[],
): { rateLimitStore?: Record<string, unknown> } {
  const st = input.relay.spec.rateLimitStore;
  if (!st) return {};
  const { namespace, name } = input.relay.metadata;
  let keyPrefix = st.keyPrefix ?? `${namespace}/${name}:`;
  if (keyPrefix.length > 64) keyPrefix = `${sha256(`${namespace}/${name}`).slice(0, 16)}:`;
  const out: Record<string, unknown> = { type: 'redis', address: st.address, keyPrefix };
  if (st.timeout) out.timeout = st.timeout;
  if (st.credentialsSecret) {
    const c = input.credentials.get(st.credentialsSecret);
    if (!c) {
      problems.push({
        reason: 'SecretMissing',
        message: `rateLimitStore: Secret ${st.credentialsSecret} (keys username, password) not found or incomplete; each pod enforces its share`,
      });
      return {};
    } else {
      secretData[secretKeys.rateLimitStore] = c.password;
      if (c.username !== 'default') out.username = c.username;
      out.passwordFile = secretKeys.rateLimitStore;
    }
  }
  return { rateLimitStore: out };
}

/** Each replica's share of every tenant limit; at least a tiny positive share so the schema holds. */
export function rateShare(replicas: number): number {
  return replicas <= 1 ? 1 : Math.floor((1 / replicas) * 1e6) / 1e6;
}

export function buildConfigMap(relay: SmtpRelay, doc: Record<string, unknown>): KObject {
  const text =
    '# Rendered by the Cartero operator from SmtpRelay ' +
    `${relay.metadata.namespace}/${relay.metadata.name}. Edits are overwritten.\n` +
    YAML.stringify(doc, { lineWidth: 0 });
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: meta(relay, names(relay.metadata.name!).config),
    data: { [CONFIG_KEY]: text },
  };
}

export function buildSecret(relay: SmtpRelay, data: Record<string, string>): KObject {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: meta(relay, names(relay.metadata.name!).secret),
    type: 'Opaque',
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
  };
}

/**
 * The part of the spec that the relay cannot pick up by reloading its config: listeners (ports, TLS
 * mode) and the TLS Secret's presence. Its hash on the pod template rolls the pods when it changes.
 */
export function restartHash(relay: SmtpRelay): string {
  const spec = relay.spec;
  return sha256(
    JSON.stringify({
      listeners: (spec.listeners ?? DEFAULT_LISTENERS).map((l) => [
        l.name,
        containerPortOf(l),
        l.tls,
        l.auth,
      ]),
      tls: spec.tls?.secretName ?? null,
    }),
  ).slice(0, 16);
}

export interface StatefulSetOptions {
  relay: SmtpRelay;
  defaultImage: string;
  replicas: number;
  /** HostNetwork pools: the relay runs in the host network of the nodes that own the addresses. */
  hostNetworkNodes?: string[];
}

export function buildStatefulSet(o: StatefulSetOptions): KObject {
  const { relay } = o;
  const spec = relay.spec;
  const name = relay.metadata.name!;
  const n = names(name);
  const listeners = spec.listeners ?? DEFAULT_LISTENERS;
  const hostNetwork = !!o.hostNetworkNodes?.length;
  const volumes: Record<string, unknown>[] = [
    { name: 'config', configMap: { name: n.config } },
    { name: 'secrets', secret: { secretName: n.secret, defaultMode: 0o400 } },
  ];
  const mounts: Record<string, unknown>[] = [
    { name: 'config', mountPath: MOUNTS.config, readOnly: true },
    { name: 'secrets', mountPath: MOUNTS.secrets, readOnly: true },
    { name: 'spool', mountPath: MOUNTS.spool },
  ];
  if (spec.tls) {
    volumes.push({ name: 'tls', secret: { secretName: spec.tls.secretName, defaultMode: 0o400 } });
    mounts.push({ name: 'tls', mountPath: MOUNTS.tls, readOnly: true });
  }
  const fieldEnv = (env: string, fieldPath: string) => ({
    name: env,
    valueFrom: { fieldRef: { fieldPath } },
  });
  let affinity: Record<string, unknown> | undefined = spec.affinity as Record<string, unknown> | undefined;
  if (!affinity) {
    affinity = {
      podAntiAffinity: hostNetwork
        ? {
            requiredDuringSchedulingIgnoredDuringExecution: [
              { labelSelector: { matchLabels: selectorLabels(name) }, topologyKey: 'kubernetes.io/hostname' },
            ],
          }
        : {
            preferredDuringSchedulingIgnoredDuringExecution: [
              {
                weight: 100,
                podAffinityTerm: {
                  labelSelector: { matchLabels: selectorLabels(name) },
                  topologyKey: 'kubernetes.io/hostname',
                },
              },
            ],
          },
      ...(hostNetwork
        ? {
            nodeAffinity: {
              requiredDuringSchedulingIgnoredDuringExecution: {
                nodeSelectorTerms: [
                  {
                    matchExpressions: [
                      {
                        key: 'kubernetes.io/hostname',
                        operator: 'In',
                        values: [...o.hostNetworkNodes!].sort(),
                      },
                    ],
                  },
                ],
              },
            },
          }
        : {}),
    };
  }
  const storage = spec.queue?.storage ?? {};
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: meta(relay, n.statefulSet),
    spec: {
      replicas: o.replicas,
      serviceName: n.headless,
      podManagementPolicy: 'Parallel',
      selector: { matchLabels: selectorLabels(name) },
      updateStrategy: { type: 'RollingUpdate' },
      // The operator lowers replicas only once the departing pods' queues are empty: their claims may
      // go. Deleting the SmtpRelay keeps claims, so mail left behind (abandon annotation) can be recovered.
      persistentVolumeClaimRetentionPolicy: { whenScaled: 'Delete', whenDeleted: 'Retain' },
      template: {
        metadata: {
          labels: commonLabels(name),
          annotations: { [CONFIG_HASH_ANNOTATION]: restartHash(relay) },
        },
        spec: {
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          terminationGracePeriodSeconds: spec.terminationGracePeriodSeconds ?? 120,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 10001,
            runAsGroup: 10001,
            fsGroup: 10001,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          ...(hostNetwork ? { hostNetwork: true, dnsPolicy: 'ClusterFirstWithHostNet' } : {}),
          ...(spec.nodeSelector ? { nodeSelector: spec.nodeSelector } : {}),
          ...(spec.tolerations ? { tolerations: spec.tolerations } : {}),
          affinity,
          containers: [
            {
              name: 'relay',
              image: spec.image ?? o.defaultImage,
              ...(spec.imagePullPolicy ? { imagePullPolicy: spec.imagePullPolicy } : {}),
              args: ['--config', `${MOUNTS.config}/${CONFIG_KEY}`],
              env: [
                fieldEnv('POD_NAME', 'metadata.name'),
                fieldEnv('POD_NAMESPACE', 'metadata.namespace'),
                fieldEnv('POD_IP', 'status.podIP'),
                fieldEnv('NODE_NAME', 'spec.nodeName'),
              ],
              ports: [
                ...listeners.map((l) => ({
                  name: l.name,
                  containerPort: containerPortOf(l),
                  protocol: 'TCP',
                })),
                { name: 'admin', containerPort: ADMIN_PORT, protocol: 'TCP' },
              ],
              readinessProbe: {
                httpGet: { path: '/readyz', port: 'admin' },
                periodSeconds: 2,
                failureThreshold: 2,
              },
              livenessProbe: {
                httpGet: { path: '/healthz', port: 'admin' },
                initialDelaySeconds: 10,
                periodSeconds: 10,
                failureThreshold: 6,
              },
              ...(spec.resources ? { resources: spec.resources } : {}),
              securityContext: {
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ['ALL'] },
              },
              volumeMounts: mounts,
            },
          ],
          volumes,
        },
      },
      volumeClaimTemplates: [
        {
          apiVersion: 'v1',
          kind: 'PersistentVolumeClaim',
          metadata: { name: 'spool', labels: selectorLabels(name) },
          spec: {
            accessModes: ['ReadWriteOnce'],
            ...(storage.storageClassName ? { storageClassName: storage.storageClassName } : {}),
            resources: { requests: { storage: String(storage.size ?? '1Gi') } },
          },
        },
      ],
    },
  };
}

export function buildServices(relay: SmtpRelay): KObject[] {
  const name = relay.metadata.name!;
  const n = names(name);
  const listeners = relay.spec.listeners ?? DEFAULT_LISTENERS;
  const ports = listeners.map((l) => ({ name: l.name, port: l.port, targetPort: l.name, protocol: 'TCP' }));
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(relay, n.headless),
      spec: {
        clusterIP: 'None',
        publishNotReadyAddresses: true,
        selector: selectorLabels(name),
        ports: [...ports, { name: 'admin', port: ADMIN_PORT, targetPort: 'admin', protocol: 'TCP' }],
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(relay, n.service),
      spec: { type: 'ClusterIP', selector: selectorLabels(name), ports },
    },
  ];
}

export function buildPdb(relay: SmtpRelay): KObject | undefined {
  const pdb = relay.spec.podDisruptionBudget;
  if (pdb?.enabled === false) return undefined;
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: meta(relay, names(relay.metadata.name!).pdb),
    spec: {
      maxUnavailable: pdb?.maxUnavailable ?? 1,
      selector: { matchLabels: selectorLabels(relay.metadata.name!) },
    },
  };
}

export function buildServiceMonitor(relay: SmtpRelay): KObject {
  return {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'ServiceMonitor',
    metadata: meta(relay, names(relay.metadata.name!).serviceMonitor),
    spec: {
      selector: { matchLabels: { ...selectorLabels(relay.metadata.name!) } },
      endpoints: [{ port: 'admin', path: '/metrics', interval: '30s' }],
      namespaceSelector: { matchNames: [relay.metadata.namespace] },
    },
  };
}

/** One Cilium egress-gateway policy per allocated pod (mode CiliumEgressGateway). Cluster-scoped. */
export function buildEgressPolicies(
  relay: SmtpRelay,
  pools: Map<string, IpPool>,
  allocations: Allocation[],
): KObject[] {
  const out: KObject[] = [];
  for (const a of allocations) {
    const pool = pools.get(a.pool);
    if (!pool || pool.spec.mode !== 'CiliumEgressGateway' || !pool.spec.egressGateway) continue;
    out.push({
      apiVersion: 'cilium.io/v2',
      kind: 'CiliumEgressGatewayPolicy',
      metadata: {
        name: `cartero-${relay.metadata.namespace}-${a.pod}-${a.pool}`.slice(0, 253),
        labels: {
          ...commonLabels(relay.metadata.name!),
          'cartero.io/relay-namespace': relay.metadata.namespace!,
          'cartero.io/ip-pool': a.pool,
        },
      },
      spec: {
        selectors: [
          {
            podSelector: {
              matchLabels: {
                'io.kubernetes.pod.namespace': relay.metadata.namespace,
                [POD_NAME_LABEL]: a.pod,
              },
            },
          },
        ],
        destinationCIDRs: pool.spec.egressGateway.destinationCIDRs ?? ['0.0.0.0/0'],
        egressGateway: {
          nodeSelector: { matchLabels: pool.spec.egressGateway.nodeSelector },
          egressIP: a.ip,
        },
      },
    });
  }
  return out;
}

/** The pod names a StatefulSet of `n` replicas has. */
export function podNames(relay: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${relay}-${i}`);
}
