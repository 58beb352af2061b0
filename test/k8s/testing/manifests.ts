/**
 * Manifests for the process kubelet's tests, built as objects: a pod, a Deployment or StatefulSet, and
 * the podserver container most of them run. `manifests()` joins them for `kubectl apply -f -`.
 */
import { PODSERVER_IMAGE } from './kubelet-suite.js';

type Json = Record<string, unknown>;

/** The node the process kubelet runs its pods on (its default `nodeName`). */
export const KUBELET_NODE = 'cartero-kubelet';

/**
 * One stream of documents for `kubectl apply -f -`: YAML documents, each written as JSON (kubectl reads a
 * stream that starts with `{` as JSON, which has no `---`).
 */
export const manifests = (...docs: Json[]): string => docs.map((d) => `---\n${JSON.stringify(d)}\n`).join('');

/** The podserver as container `server`: `--port <port>`, then `args`; `more` adds to it (probes, env, mounts). */
export function podserverContainer(port: number, args: string[] = [], more: Json = {}): Json {
  return { name: 'server', image: PODSERVER_IMAGE, args: ['--port', String(port), ...args], ...more };
}

/** A readiness (or liveness) probe: GET /readyz on `port` (a number or a port's name). */
export const readyz = (port: number | string, periodSeconds: number, more: Json = {}): Json => ({
  httpGet: { path: '/readyz', port },
  periodSeconds,
  ...more,
});

/** A Pod bound to the process kubelet's node. */
export function nodePod(name: string, spec: Json, metadata: Json = {}): Json {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, ...metadata },
    spec: { nodeName: KUBELET_NODE, ...spec },
  };
}

/**
 * A Deployment or StatefulSet `name` (a StatefulSet's `serviceName` is its name too) whose pods carry
 * the label `app: <name>` and run `podSpec`; `spec` adds to its spec (replicas, strategies, claims),
 * `template` to its pods' metadata (annotations).
 */
export function workload(
  kind: 'Deployment' | 'StatefulSet',
  name: string,
  spec: Json,
  podSpec: Json,
  template: Json = {},
): Json {
  return {
    apiVersion: 'apps/v1',
    kind,
    metadata: { name },
    spec: {
      ...(kind === 'StatefulSet' ? { serviceName: name } : {}),
      selector: { matchLabels: { app: name } },
      ...spec,
      template: { metadata: { labels: { app: name }, ...template }, spec: podSpec },
    },
  };
}

/** A Service `name` with this spec. */
export function service(name: string, spec: Json, metadata: Json = {}): Json {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, ...metadata }, spec };
}
