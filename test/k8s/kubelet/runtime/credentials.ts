/** A pod's ServiceAccount credentials: bound tokens, the token directory and a per-pod kubeconfig. */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify as toYaml } from 'yaml';
import type { KObject } from '../../apiserver/objects.js';
import { SERVICEACCOUNT_DIR } from '../shared.js';
import { serviceAccountName } from './env.js';
import type { PodSpec, Runtime, RuntimeContext } from './types.js';

/** The pod's ServiceAccount (`default` is created when missing, as its controller would). */
function serviceAccountOf(ctx: RuntimeContext, pod: KObject, rt: Runtime): KObject {
  const name = serviceAccountName(pod.spec as PodSpec);
  if (name === 'default') ctx.ensureServiceAccount?.(rt.namespace, name);
  try {
    return ctx.store.get(ctx.kinds.serviceAccount, rt.namespace, name);
  } catch (err) {
    throw new Error(`serviceaccount ${rt.namespace}/${name} not found`, { cause: err });
  }
}

/** A token for the pod's ServiceAccount, bound to the pod (one per pod, or per audience). */
export function podToken(ctx: RuntimeContext, pod: KObject, rt: Runtime, audience?: string): string {
  const issue = ctx.server.serviceAccountToken;
  if (!issue) throw new Error('the kubelet was given no way to issue ServiceAccount tokens');
  const sa = serviceAccountOf(ctx, pod, rt);
  const bind = { pod: { name: rt.name, uid: rt.uid } };
  if (audience) return issue(rt.namespace, sa.metadata.name ?? '', { ...bind, audiences: [audience] });
  rt.saToken ??= issue(rt.namespace, sa.metadata.name ?? '', bind);
  return rt.saToken;
}

/**
 * ServiceAccount credentials, as the ServiceAccount admission plugin and a kubelet provide them:
 * unless `automountServiceAccountToken` is false (pod, then ServiceAccount), `token`, `namespace`
 * and (when the server has one) `ca.crt` in `<podDir>/mounts/var/run/secrets/kubernetes.io/serviceaccount`
 * (unless the container mounts a volume there itself), and a kubeconfig `<podDir>/kubeconfig` with
 * the API server's URL and that token file, named by `KUBECONFIG`: the in-cluster loaders read the
 * fixed path and use https, which local processes cannot share, while `loadFromDefault()` reads
 * `KUBECONFIG` first, so the same program runs here and in a real cluster.
 */
export async function writeServiceAccount(ctx: RuntimeContext, pod: KObject, rt: Runtime): Promise<void> {
  const { server } = ctx;
  rt.kubeconfig = undefined;
  rt.implicitMounts = [];
  if (!server.serviceAccountToken || !server.url) return;
  const spec = pod.spec as PodSpec;
  const sa = serviceAccountOf(ctx, pod, rt);
  const automount = spec.automountServiceAccountToken ?? sa.automountServiceAccountToken ?? true;
  if (automount === false) return;
  const saDir = path.join(rt.dir, 'mounts', SERVICEACCOUNT_DIR);
  const own = (rt.container.volumeMounts ?? []).some(
    (m) => m.mountPath.replace(/\/+$/, '') === SERVICEACCOUNT_DIR,
  );
  if (!own) {
    await mkdir(saDir, { recursive: true });
    await writeFile(path.join(saDir, 'token'), podToken(ctx, pod, rt), { mode: 0o600 });
    await writeFile(path.join(saDir, 'namespace'), rt.namespace);
    if (server.caCert) await writeFile(path.join(saDir, 'ca.crt'), server.caCert);
    rt.implicitMounts = [SERVICEACCOUNT_DIR];
  }
  const tokenFile = path.join(saDir, 'token');
  const cluster: Record<string, unknown> = { server: server.url };
  if (server.caCert && server.url.startsWith('https:'))
    cluster['certificate-authority'] = path.join(saDir, 'ca.crt');
  else cluster['insecure-skip-tls-verify'] = true; // client-node needs it for http
  const user = sa.metadata.name ?? 'default';
  const kubeconfig = path.join(rt.dir, 'kubeconfig');
  await writeFile(
    kubeconfig,
    toYaml({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'in-cluster', cluster }],
      // `tokenFile` is client-go's spelling, `token-file` client-node 1.4's.
      users: [{ name: user, user: { tokenFile, 'token-file': tokenFile } }],
      contexts: [{ name: 'in-cluster', context: { cluster: 'in-cluster', user, namespace: rt.namespace } }],
      'current-context': 'in-cluster',
      preferences: {},
    }),
    { mode: 0o600 },
  );
  rt.kubeconfig = kubeconfig;
}
