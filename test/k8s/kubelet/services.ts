/**
 * Services for the process kubelet: plays the endpoints and EndpointSlice controllers and kube-proxy.
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
 * - Proxy: for every Service with a cluster IP, a TCP listener on clusterIP:port for each TCP port,
 *   forwarding each connection to a Ready endpoint (round robin; `sessionAffinity: ClientIP` sticks a
 *   client address to one endpoint; when no endpoint is Ready, serving terminating ones are used, as
 *   kube-proxy does). The listener is closed while there is no endpoint, so connections are refused
 *   at once (kube-proxy's REJECT). The upstream connection is made from the client's loopback
 *   address, so pods see the real client IP (trustedNetworks-style checks work). A Service without a
 *   selector forwards to the addresses of its hand-written Endpoints object. Established
 *   connections are left alone when endpoints change (conntrack); they end with either side.
 *
 * Ports below 1024 can only be bound by root (or with `net.ipv4.ip_unprivileged_port_start=0`).
 *
 * Not here: UDP/SCTP ports, NodePorts and load balancers (the cluster IP is the only address),
 * topology hints, `internalTrafficPolicy: Local`, more than 100 endpoints per slice (one slice per
 * port set, however large).
 */
import net from 'node:net';
import { ApiError } from '../apiserver/errors.js';
import { jsonEqual, type KObject } from '../apiserver/objects.js';
import type { ResourceType } from '../apiserver/resources.js';
import type { ApiServer } from '../apiserver/server.js';
import type { StoreEvent } from '../apiserver/store.js';
import { conditionOf } from './shared.js';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const SLICE_MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const SLICE_CONTROLLER = 'endpointslice-controller.k8s.io';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';

interface ServicePort {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: string;
  appProtocol?: string;
}

interface ServiceSpec {
  type?: string;
  clusterIP?: string;
  selector?: Record<string, string>;
  ports?: ServicePort[];
  publishNotReadyAddresses?: boolean;
  sessionAffinity?: string;
}

interface EndpointPort {
  name?: string;
  port: number;
  protocol: string;
  appProtocol?: string;
}

interface PodEndpoint {
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

export interface ServiceListener {
  namespace: string;
  service: string;
  ip: string;
  port: number;
  /** Where new connections go (empty: the port is closed, connections are refused). */
  backends: Backend[];
  /** Whether the port is open now. */
  listening: boolean;
}

export interface ServiceProxyOptions {
  server: Pick<ApiServer, 'store' | 'registry'>;
  /** Called with errors it hits (default: console.error). */
  onError?: (err: unknown) => void;
}

export interface ServiceProxy {
  /** The cluster IP ports it proxies. */
  listeners(): ServiceListener[];
  /** Closes every listener and every proxied connection. */
  stop(): Promise<void>;
}

interface Listener {
  key: string;
  namespace: string;
  service: string;
  ip: string;
  port: number;
  backends: Backend[];
  affinity: boolean;
  server?: net.Server;
  rr: number;
  sticky: Map<string, string>;
  busy: boolean;
  dirty: boolean;
  removed: boolean;
  retry?: NodeJS.Timeout;
}

const matches = (selector: Record<string, string>, labels: Record<string, string> | undefined) =>
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);

const isHeadless = (spec: ServiceSpec) => spec.clusterIP === 'None';

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

const portsKey = (ports: EndpointPort[]) =>
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

export function startServiceProxy(opts: ServiceProxyOptions): ServiceProxy {
  const { store, registry } = opts.server;
  const svcT = registry.find('', 'v1', 'services') as ResourceType;
  const podT = registry.find('', 'v1', 'pods') as ResourceType;
  const epT = registry.find('', 'v1', 'endpoints') as ResourceType;
  const sliceT = registry.find('discovery.k8s.io', 'v1', 'endpointslices') as ResourceType;
  const onError = opts.onError ?? ((err: unknown) => console.error('services:', err));
  const listeners = new Map<string, Listener>();
  /** Every proxied connection (both ends), to end them on stop. */
  const sockets = new Set<net.Socket>();
  let stopped = false;

  /** Writes that lose a race (object gone, namespace terminating, conflict) are retried by the next pass. */
  const tolerate = (fn: () => void) => {
    try {
      fn();
    } catch (err) {
      if (err instanceof ApiError && [403, 404, 409].includes(err.code)) return;
      if (!stopped) onError(err);
    }
  };

  let scheduled = false;
  const schedule = () => {
    if (scheduled || stopped) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      if (!stopped) tolerate(sync);
    });
  };
  const unsubscribe = store.subscribe((e: StoreEvent) => {
    if (e.key === '/services' && e.type === 'DELETED')
      // The endpoints controller removes a deleted Service's Endpoints (slices go with their owner).
      setImmediate(() => tolerate(() => store.delete(epT, e.namespace, e.object.metadata.name ?? '')));
    if (
      e.key === '/services' ||
      e.key === '/pods' ||
      e.key === '/endpoints' ||
      e.key === 'discovery.k8s.io/endpointslices'
    )
      schedule();
  });

  function sync(): void {
    const services = store.list(svcT).items;
    const podsByNs = new Map<string, KObject[]>();
    const podsIn = (ns: string) => {
      let pods = podsByNs.get(ns);
      if (!pods) podsByNs.set(ns, (pods = store.list(podT, { namespace: ns }).items));
      return pods;
    };
    const wanted = new Map<string, Omit<Listener, 'rr' | 'sticky' | 'busy' | 'dirty' | 'removed'>>();
    for (const svc of services) {
      const spec = (svc.spec ?? {}) as ServiceSpec;
      const ns = svc.metadata.namespace ?? '';
      if (spec.type === 'ExternalName' || svc.metadata.deletionTimestamp) continue;
      const selected = !!spec.selector && Object.keys(spec.selector).length > 0;
      if (selected) {
        tolerate(() => writeEndpoints(svc, podsIn(ns)));
        tolerate(() => writeSlices(svc, podsIn(ns)));
      }
      if (!spec.clusterIP || isHeadless(spec) || !net.isIPv4(spec.clusterIP)) continue;
      for (const sp of spec.ports ?? []) {
        if ((sp.protocol ?? 'TCP') !== 'TCP') continue;
        const key = `${spec.clusterIP}:${sp.port}`;
        wanted.set(key, {
          key,
          namespace: ns,
          service: svc.metadata.name ?? '',
          ip: spec.clusterIP,
          port: sp.port,
          backends: selected ? selectorBackends(svc, sp, podsIn(ns)) : endpointsBackends(svc, sp),
          affinity: spec.sessionAffinity === 'ClientIP',
        });
      }
    }
    for (const l of listeners.values())
      if (!wanted.has(l.key)) {
        l.removed = true;
        listeners.delete(l.key);
        void converge(l);
      }
    for (const w of wanted.values()) {
      let l = listeners.get(w.key);
      if (!l) {
        l = { ...w, rr: 0, sticky: new Map(), busy: false, dirty: false, removed: false };
        listeners.set(w.key, l);
      } else Object.assign(l, w);
      void converge(l);
    }
  }

  function selectorBackends(svc: KObject, sp: ServicePort, pods: KObject[]): Backend[] {
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

  /** Backends of a Service without a selector: its hand-written Endpoints. */
  function endpointsBackends(svc: KObject, sp: ServicePort): Backend[] {
    let ep: KObject;
    try {
      ep = store.get(epT, svc.metadata.namespace ?? '', svc.metadata.name ?? '');
    } catch {
      return [];
    }
    const single = ((svc.spec as ServiceSpec).ports ?? []).length === 1;
    const out: Backend[] = [];
    for (const subset of (ep.subsets ?? []) as { addresses?: { ip: string }[]; ports?: EndpointPort[] }[]) {
      const port = subset.ports?.find(
        (p) => (p.name ?? '') === (sp.name ?? '') || (single && subset.ports?.length === 1),
      );
      if (!port) continue;
      for (const a of subset.addresses ?? []) out.push({ ip: a.ip, port: port.port });
    }
    return out;
  }

  function writeEndpoints(svc: KObject, pods: KObject[]): void {
    const want = desiredEndpoints(svc, pods);
    const ns = svc.metadata.namespace ?? '';
    const name = svc.metadata.name ?? '';
    let current: KObject | undefined;
    try {
      current = store.get(epT, ns, name);
    } catch {
      store.create(epT, ns, want);
      return;
    }
    if (jsonEqual(current.subsets, want.subsets) && jsonEqual(current.metadata.labels, want.metadata.labels))
      return;
    const next: KObject = { ...current, metadata: { ...current.metadata, labels: want.metadata.labels } };
    if (want.subsets) next.subsets = want.subsets;
    else delete next.subsets;
    store.update(epT, ns, name, next);
  }

  function writeSlices(svc: KObject, pods: KObject[]): void {
    const ns = svc.metadata.namespace ?? '';
    const existing = store
      .list(sliceT, { namespace: ns })
      .items.filter(
        (s) =>
          s.metadata.labels?.[SERVICE_NAME_LABEL] === svc.metadata.name &&
          s.metadata.labels?.[SLICE_MANAGED_BY_LABEL] === SLICE_CONTROLLER &&
          s.metadata.ownerReferences?.some((r) => r.uid === svc.metadata.uid),
      );
    const keyOf = (s: KObject) =>
      portsKey(((s.ports ?? []) as EndpointPort[]).map((p) => ({ ...p, name: p.name || undefined })));
    const left = [...existing];
    for (const want of desiredSlices(svc, pods)) {
      const i = left.findIndex((s) => keyOf(s) === keyOf(want));
      if (i < 0) {
        store.create(sliceT, ns, want);
        continue;
      }
      const [current] = left.splice(i, 1);
      const same =
        jsonEqual(current.endpoints, want.endpoints) &&
        jsonEqual(current.ports, want.ports) &&
        jsonEqual(current.metadata.labels, want.metadata.labels);
      if (same) continue;
      store.update(sliceT, ns, current.metadata.name ?? '', {
        ...current,
        metadata: { ...current.metadata, labels: want.metadata.labels },
        endpoints: want.endpoints,
        ports: want.ports,
      });
    }
    for (const s of left) store.delete(sliceT, ns, s.metadata.name ?? '');
  }

  // ---------------------------------------------------------------- the proxy
  /** Opens the port while it has backends, closes it otherwise (one change at a time per port). */
  async function converge(l: Listener): Promise<void> {
    if (l.busy) {
      l.dirty = true;
      return;
    }
    l.busy = true;
    try {
      do {
        l.dirty = false;
        const want = !stopped && !l.removed && l.backends.length > 0;
        if (want && !l.server) await open(l);
        else if (!want && l.server) {
          l.server.close(); // stops accepting; proxied connections go on
          l.server = undefined;
        }
      } while (l.dirty);
    } finally {
      l.busy = false;
    }
  }

  async function open(l: Listener): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => forward(l, socket));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(l.port, l.ip, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      const why =
        (err as NodeJS.ErrnoException).code === 'EACCES' && l.port < 1024
          ? ' (ports below 1024 need root or sysctl net.ipv4.ip_unprivileged_port_start=0)'
          : '';
      if (!stopped)
        onError(
          new Error(`service ${l.namespace}/${l.service}: cannot listen on ${l.key}${why}`, { cause: err }),
        );
      clearTimeout(l.retry);
      l.retry = setTimeout(() => void converge(l), 1_000);
      return;
    }
    server.on('error', (err) => onError(err));
    if (stopped || l.removed || !l.backends.length) {
      server.close();
      return;
    }
    l.server = server;
  }

  /** The backends to try for a client, in order: its sticky one (ClientIP affinity), then round robin. */
  function candidates(l: Listener, client: string): Backend[] {
    const n = l.backends.length;
    const start = l.rr++ % Math.max(1, n);
    const order = [...l.backends.slice(start), ...l.backends.slice(0, start)];
    const stuck = l.affinity ? l.sticky.get(client) : undefined;
    const i = stuck ? order.findIndex((b) => `${b.ip}:${b.port}` === stuck) : -1;
    if (i > 0) order.unshift(...order.splice(i, 1));
    return order;
  }

  function forward(l: Listener, client: net.Socket): void {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => undefined);
    const from = client.remoteAddress ?? '';
    const order = candidates(l, from);
    let upstream: net.Socket | undefined;
    client.once('close', () => upstream?.destroy());
    const attempt = (i: number) => {
      if (client.destroyed) return;
      if (i >= order.length) {
        client.resetAndDestroy(); // nothing to talk to: refuse, as kube-proxy's REJECT does
        return;
      }
      const b = order[i];
      // From the client's own loopback address, so the pod sees who connected.
      const localAddress = net.isIPv4(from) && from.startsWith('127.') ? from : undefined;
      const up = net.connect({
        host: b.ip,
        port: b.port,
        allowHalfOpen: true,
        ...(localAddress ? { localAddress } : {}),
      });
      upstream = up;
      let connected = false;
      up.once('connect', () => {
        connected = true;
        if (l.affinity) l.sticky.set(from, `${b.ip}:${b.port}`);
        sockets.add(up);
        up.on('close', () => {
          sockets.delete(up);
          client.destroy();
        });
        client.pipe(up);
        up.pipe(client);
      });
      up.on('error', () => {
        if (!connected) attempt(i + 1);
      });
    };
    attempt(0);
  }

  schedule();

  return {
    listeners: () =>
      [...listeners.values()].map((l) => ({
        namespace: l.namespace,
        service: l.service,
        ip: l.ip,
        port: l.port,
        backends: [...l.backends],
        listening: !!l.server,
      })),
    async stop() {
      stopped = true;
      unsubscribe();
      const closing: Promise<void>[] = [];
      for (const l of listeners.values()) {
        clearTimeout(l.retry);
        const server = l.server;
        l.server = undefined;
        if (server) closing.push(new Promise((resolve) => server.close(() => resolve())));
      }
      for (const s of sockets) s.destroy();
      listeners.clear();
      await Promise.all(closing);
    },
  };
}
