/**
 * Services for the process kubelet: plays the endpoints and EndpointSlice controllers and kube-proxy.
 *
 * - Endpoints and EndpointSlices: the endpoints controllers write what `endpoints.ts` computes.
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
import {
  desiredEndpoints,
  desiredSlices,
  isHeadless,
  portsKey,
  selectorBackends,
  SERVICE_NAME_LABEL,
  SLICE_CONTROLLER,
  SLICE_MANAGED_BY_LABEL,
  type Backend,
  type EndpointPort,
  type ServicePort,
  type ServiceSpec,
} from './endpoints.js';

export {
  desiredEndpoints,
  desiredSlices,
  HEADLESS_LABEL,
  SERVICE_NAME_LABEL,
  SLICE_CONTROLLER,
  SLICE_MANAGED_BY_LABEL,
  type Backend,
} from './endpoints.js';

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
