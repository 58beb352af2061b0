/**
 * What the endpoints and EndpointSlice controllers want for a Service with a selector, as pure
 * functions of the Service and its namespace's pods (`services.ts` writes them and proxies):
 *
 * - Endpoints: for every Service with a selector, an `Endpoints` object of the same name lists the
 *   matching pods that have an IP (Ready ones in `addresses`, the others in `notReadyAddresses`;
 *   terminating pods left out), with the Service's ports resolved per pod (a named `targetPort` is
 *   looked up in the pod's container ports; a pod without it is left out of that port). Pods with
 *   different port numbers end up in different subsets, as the real controller repacks them.
 *   Headless Services (`clusterIP: None`) get Endpoints too. `publishNotReadyAddresses` is honoured.
 * - EndpointSlices: one slice per port set (`<svc>-<random>`, labels `kubernetes.io/service-name` and
 *   `endpointslice.kubernetes.io/managed-by`, owned by the Service), endpoints with the
 *   ready/serving/terminating conditions.
 * - The backends a Service port forwards to.
 */
import type { KObject } from '../apiserver/objects.js';
import { conditionOf } from './shared.js';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const SLICE_MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const SLICE_CONTROLLER = 'endpointslice-controller.k8s.io';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';

export interface ServicePort {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: string;
  appProtocol?: string;
}

export interface ServiceSpec {
  type?: string;
  clusterIP?: string;
  selector?: Record<string, string>;
  ports?: ServicePort[];
  publishNotReadyAddresses?: boolean;
  sessionAffinity?: string;
}

export interface EndpointPort {
  name?: string;
  port: number;
  protocol: string;
  appProtocol?: string;
}

export interface PodEndpoint {
  pod: KObject;
  ip: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  /** The Service's ports this pod serves, resolved to its port numbers. */
  ports: EndpointPort[];
}

/** One address a Service port forwards to. */
export interface Backend {
  ip: string;
  port: number;
}

const matches = (selector: Record<string, string>, labels: Record<string, string> | undefined) =>
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);

export const isHeadless = (spec: ServiceSpec) => spec.clusterIP === 'None';

/** The pods a Service with a selector covers, with their resolved ports and conditions. */
function podEndpoints(svc: KObject, pods: KObject[]): PodEndpoint[] {
  const spec = (svc.spec ?? {}) as ServiceSpec;
  const selector = spec.selector ?? {};
  const out: PodEndpoint[] = [];
  for (const pod of pods) {
    if (!matches(selector, pod.metadata.labels)) continue;
    const status = (pod.status ?? {}) as { podIP?: string; phase?: string };
    if (!status.podIP || status.phase === 'Succeeded' || status.phase === 'Failed') continue;
    const containers = ((
      pod.spec as { containers?: { ports?: { name?: string; containerPort?: number }[] }[] }
    )?.containers ?? []) as { ports?: { name?: string; containerPort?: number }[] }[];
    const ports: EndpointPort[] = [];
    for (const sp of spec.ports ?? []) {
      const target = sp.targetPort ?? sp.port;
      const port =
        typeof target === 'number'
          ? target
          : containers.flatMap((c) => c.ports ?? []).find((p) => p.name === target)?.containerPort;
      if (port === undefined) continue; // the pod does not have that named port
      ports.push({
        ...(sp.name ? { name: sp.name } : {}),
        port,
        protocol: sp.protocol ?? 'TCP',
        ...(sp.appProtocol ? { appProtocol: sp.appProtocol } : {}),
      });
    }
    const terminating = !!pod.metadata.deletionTimestamp;
    const serving = status.phase === 'Running' && conditionOf(pod, 'Ready')?.status === 'True';
    out.push({ pod, ip: status.podIP, ready: serving && !terminating, serving, terminating, ports });
  }
  return out.sort((a, b) => compareIp(a.ip, b.ip));
}

function compareIp(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 4; i++) if (pa[i] !== pb[i]) return (pa[i] ?? 0) - (pb[i] ?? 0);
  return 0;
}

export const portsKey = (ports: EndpointPort[]) =>
  JSON.stringify([...ports].sort((a, b) => (a.name ?? '').localeCompare(b.name ?? '') || a.port - b.port));

function targetRef(pod: KObject) {
  return {
    kind: 'Pod',
    namespace: pod.metadata.namespace,
    name: pod.metadata.name,
    uid: pod.metadata.uid,
  };
}

/** `hostname` of an endpoint: set when the pod names the Service as its subdomain (StatefulSets). */
function hostnameOf(svc: KObject, pod: KObject): string | undefined {
  const spec = (pod.spec ?? {}) as { hostname?: string; subdomain?: string };
  return spec.hostname && spec.subdomain === svc.metadata.name ? spec.hostname : undefined;
}

/** Groups endpoints by their port set (what the real controllers do before writing). */
function byPortSet(
  svc: KObject,
  eps: PodEndpoint[],
): Map<string, { ports: EndpointPort[]; eps: PodEndpoint[] }> {
  const spec = (svc.spec ?? {}) as ServiceSpec;
  const groups = new Map<string, { ports: EndpointPort[]; eps: PodEndpoint[] }>();
  const portless = !spec.ports?.length && isHeadless(spec);
  for (const ep of eps) {
    if (!ep.ports.length && !portless) continue;
    const key = portsKey(ep.ports);
    const g = groups.get(key) ?? { ports: ep.ports, eps: [] };
    g.eps.push(ep);
    groups.set(key, g);
  }
  return groups;
}

/** The Endpoints object the endpoints controller writes for a Service with a selector. */
export function desiredEndpoints(svc: KObject, pods: KObject[]): KObject {
  const spec = (svc.spec ?? {}) as ServiceSpec;
  const publish = spec.publishNotReadyAddresses === true;
  const eps = podEndpoints(svc, pods).filter((ep) => publish || !ep.terminating);
  const subsets = [...byPortSet(svc, eps).entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([, g]) => {
      const address = (ep: PodEndpoint) => {
        const hostname = hostnameOf(svc, ep.pod);
        const nodeName = (ep.pod.spec as { nodeName?: string } | undefined)?.nodeName;
        return {
          ip: ep.ip,
          ...(hostname ? { hostname } : {}),
          ...(nodeName ? { nodeName } : {}),
          targetRef: targetRef(ep.pod),
        };
      };
      const ready = g.eps.filter((ep) => publish || ep.ready).map(address);
      const notReady = g.eps.filter((ep) => !(publish || ep.ready)).map(address);
      return {
        ...(ready.length ? { addresses: ready } : {}),
        ...(notReady.length ? { notReadyAddresses: notReady } : {}),
        ...(g.ports.length ? { ports: g.ports } : {}),
      };
    });
  return {
    apiVersion: 'v1',
    kind: 'Endpoints',
    metadata: {
      name: svc.metadata.name,
      namespace: svc.metadata.namespace,
      labels: { ...(svc.metadata.labels ?? {}), ...(isHeadless(spec) ? { [HEADLESS_LABEL]: '' } : {}) },
    },
    ...(subsets.length ? { subsets } : {}),
  };
}

/** The EndpointSlices (one per port set; a placeholder without endpoints when there are none). */
export function desiredSlices(svc: KObject, pods: KObject[]): KObject[] {
  const spec = (svc.spec ?? {}) as ServiceSpec;
  const publish = spec.publishNotReadyAddresses === true;
  const groups = [...byPortSet(svc, podEndpoints(svc, pods)).values()];
  const labels = {
    ...(svc.metadata.labels ?? {}),
    [SERVICE_NAME_LABEL]: svc.metadata.name ?? '',
    [SLICE_MANAGED_BY_LABEL]: SLICE_CONTROLLER,
    ...(isHeadless(spec) ? { [HEADLESS_LABEL]: '' } : {}),
  };
  const slice = (ports: EndpointPort[], eps: PodEndpoint[]): KObject => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      generateName: `${svc.metadata.name}-`,
      namespace: svc.metadata.namespace,
      labels,
      ownerReferences: [
        {
          apiVersion: 'v1',
          kind: 'Service',
          name: svc.metadata.name ?? '',
          uid: svc.metadata.uid ?? '',
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    addressType: 'IPv4',
    endpoints: eps.map((ep) => {
      const hostname = hostnameOf(svc, ep.pod);
      const nodeName = (ep.pod.spec as { nodeName?: string } | undefined)?.nodeName;
      return {
        addresses: [ep.ip],
        conditions: {
          ready: publish || ep.ready,
          serving: publish || ep.serving,
          terminating: ep.terminating,
        },
        ...(hostname ? { hostname } : {}),
        ...(nodeName ? { nodeName } : {}),
        targetRef: targetRef(ep.pod),
      };
    }),
    ports: ports.map((p) => ({ ...p, name: p.name ?? '' })),
  });
  if (!groups.length) return [{ ...slice([], []), ports: [] }];
  return groups.map((g) => slice(g.ports, g.eps));
}

/**
 * The backends of a Service port with a selector: its Ready pods (with publishNotReadyAddresses, all
 * that are not terminating), else the terminating ones that still serve.
 */
export function selectorBackends(svc: KObject, sp: ServicePort, pods: KObject[]): Backend[] {
  const eps = podEndpoints(svc, pods);
  const usable = (ep: PodEndpoint) => ep.ports.some((p) => p.name === sp.name || (!p.name && !sp.name));
  let chosen = eps.filter((ep) => ep.ready && usable(ep));
  if ((svc.spec as ServiceSpec).publishNotReadyAddresses)
    chosen = eps.filter((ep) => !ep.terminating && usable(ep));
  // No Ready endpoint: kube-proxy falls back to terminating ones that still serve.
  if (!chosen.length) chosen = eps.filter((ep) => ep.terminating && ep.serving && usable(ep));
  return chosen.map((ep) => ({
    ip: ep.ip,
    port: ep.ports.find((p) => p.name === sp.name || (!p.name && !sp.name))?.port ?? 0,
  }));
}
