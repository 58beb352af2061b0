/**
 * A container's environment: `PATH`, `HOME`, the pod's identity, the API server's address and
 * `KUBECONFIG`, then `envFrom` and `env` (literals with `$(VAR)` expansion, fieldRef,
 * configMapKeyRef, secretKeyRef). Also the ConfigMap/Secret and downward API lookups volumes use.
 */
import path from 'node:path';
import type { KObject } from '../../apiserver/objects.js';
import type { ResourceType } from '../../apiserver/resources.js';
import type { NameRef, PodSpec, Runtime, RuntimeContext } from './types.js';

/** Expands `$(VAR)` from `env` (unknown names stay as they are; `$$` is a `$`). */
export function expand(text: string, env: Record<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) =>
    name === undefined ? '$' : (env[name] ?? m),
  );
}

export const serviceAccountName = (spec: PodSpec) =>
  spec.serviceAccountName ?? spec.serviceAccount ?? 'default';

/** The data of a ConfigMap or Secret (decoded); undefined when missing and `optional`. */
export function lookupKey(
  ctx: RuntimeContext,
  t: ResourceType,
  ns: string,
  ref: NameRef & { key?: string },
  kind: string,
): Record<string, string> | undefined {
  try {
    const obj = ctx.store.get(t, ns, ref.name ?? '');
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries((obj.data ?? {}) as Record<string, string>))
      out[k] = t === ctx.kinds.secret ? Buffer.from(v, 'base64').toString('utf8') : v;
    return out;
  } catch (err) {
    if (ref.optional) return undefined;
    throw new Error(`${kind} ${ns}/${ref.name} not found`, { cause: err });
  }
}

/** The value of a downward API `fieldRef` (env and downwardAPI volumes). */
export function fieldRefValue(ctx: RuntimeContext, pod: KObject, rt: Runtime, p: string): string {
  const spec = pod.spec as PodSpec;
  const m = /^metadata\.(labels|annotations)\['([^']+)'\]$/.exec(p);
  if (m) return (pod.metadata[m[1]] as Record<string, string> | undefined)?.[m[2]] ?? '';
  switch (p) {
    case 'metadata.name':
      return rt.name;
    case 'metadata.namespace':
      return rt.namespace;
    case 'metadata.uid':
      return rt.uid;
    case 'metadata.labels':
    case 'metadata.annotations': {
      const map = (p === 'metadata.labels' ? pod.metadata.labels : pod.metadata.annotations) ?? {};
      return Object.keys(map)
        .sort()
        .map((k) => `${k}=${JSON.stringify(map[k])}`)
        .join('\n');
    }
    case 'status.podIP':
      return rt.ip;
    case 'status.hostIP':
      return '127.0.0.1';
    case 'spec.nodeName':
      return ctx.nodeName;
    case 'spec.serviceAccountName':
      return serviceAccountName(spec);
    default:
      throw new Error(`unsupported fieldRef ${p}`);
  }
}

export function buildEnv(ctx: RuntimeContext, pod: KObject, rt: Runtime): Record<string, string> {
  const { configMap, secret } = ctx.kinds;
  const ns = rt.namespace;
  const apiUrl = ctx.server.url ? new URL(ctx.server.url) : undefined;
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/',
    HOSTNAME: rt.name,
    POD_NAME: rt.name,
    POD_NAMESPACE: ns,
    POD_IP: rt.ip,
    NODE_NAME: ctx.nodeName,
    CARTERO_POD_ROOT: path.join(rt.dir, 'mounts'),
    // Where the API server is (a real pod gets the `kubernetes` Service's address here).
    ...(apiUrl ? { KUBERNETES_SERVICE_HOST: apiUrl.hostname, KUBERNETES_SERVICE_PORT: apiUrl.port } : {}),
    // client-node's loadFromDefault() reads this before it would try the in-cluster files.
    ...(rt.kubeconfig ? { KUBECONFIG: rt.kubeconfig } : {}),
  };
  for (const from of rt.container.envFrom ?? []) {
    const data = from.configMapRef
      ? lookupKey(ctx, configMap, ns, from.configMapRef, 'configmap')
      : from.secretRef
        ? lookupKey(ctx, secret, ns, from.secretRef, 'secret')
        : undefined;
    for (const [k, v] of Object.entries(data ?? {})) env[`${from.prefix ?? ''}${k}`] = v;
  }
  for (const e of rt.container.env ?? []) {
    const from = e.valueFrom;
    if (!from) env[e.name] = expand(e.value ?? '', env);
    else if (from.fieldRef) env[e.name] = fieldRefValue(ctx, pod, rt, from.fieldRef.fieldPath);
    else if (from.configMapKeyRef) {
      const v = lookupKey(ctx, configMap, ns, from.configMapKeyRef, 'configmap')?.[from.configMapKeyRef.key];
      if (v !== undefined) env[e.name] = v;
      else if (!from.configMapKeyRef.optional)
        throw new Error(`configmap key ${from.configMapKeyRef.key} missing`);
    } else if (from.secretKeyRef) {
      const v = lookupKey(ctx, secret, ns, from.secretKeyRef, 'secret')?.[from.secretKeyRef.key];
      if (v !== undefined) env[e.name] = v;
      else if (!from.secretKeyRef.optional) throw new Error(`secret key ${from.secretKeyRef.key} missing`);
    }
  }
  return env;
}
