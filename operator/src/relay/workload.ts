/**
 * The Kubernetes objects of an SmtpRelay's workload: the ConfigMap and Secret that carry the rendered
 * relay config (config-render.ts), the StatefulSet, its Services, PodDisruptionBudget, ServiceMonitor
 * and Cilium egress policies. Pure, no I/O; test/unit/operator-builders.test.ts covers them without an
 * API server.
 */
import { createHash } from 'node:crypto';
import YAML from 'yaml';
import type { IpPool, SmtpRelay } from '../api/types.js';
import {
  ADMIN_PORT,
  API_VERSION,
  CONFIG_HASH_ANNOTATION,
  CONFIG_KEY,
  DEFAULT_LISTENERS,
  MOUNTS,
  POD_NAME_LABEL,
  commonLabels,
  containerPortOf,
  names,
  selectorLabels,
  FEEDBACK_PORT,
} from '../constants.js';
import type { KObject } from '../objects.js';
import type { Allocation } from './config-render.js';

export function meta(
  relay: SmtpRelay,
  name: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
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
 * mode) and which TLS Secret is mounted (its name, not its content: a renewed certificate is reloaded by the
 * relay from the updated volume). Its hash on the pod template rolls the pods when it changes.
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
      ...(spec.feedback ? { feedback: spec.feedback.maxMessageSize ?? 0 } : {}),
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
    // The whole Secret as a volume, never a subPath: the kubelet swaps the files in place when the Secret
    // changes (cert-manager renewing it), and the relay's reload serves the new certificate without a restart.
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
                // the feedback listener (operator/src/relay/feedback.ts)
                ...(spec.feedback
                  ? [{ name: 'feedback', containerPort: FEEDBACK_PORT, protocol: 'TCP' }]
                  : []),
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
