/**
 * Volumes as files: ConfigMap, Secret, projected and downwardAPI volumes are written under
 * `<podDir>/mounts/<mountPath>` (one file for a `subPath`; ConfigMap/Secret changes reach running
 * pods, each file replaced atomically), emptyDirs are directories, and a PersistentVolumeClaim is a
 * symlink to `<dir>/volumes/<ns>/<claim>`, which outlives the pod. Processes cannot mount, so
 * command, args and env values that name a mount path are rewritten to the host path.
 */
import { mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { KObject } from '../../apiserver/objects.js';
import type { StoreEvent } from '../../apiserver/store.js';
import { podToken } from './credentials.js';
import { fieldRefValue, lookupKey } from './env.js';
import { currentPod } from './status.js';
import type { DownwardItem, KeyPath, PodSpec, Runtime, RuntimeContext, Volume, VolumeFile } from './types.js';

/** The files of a ConfigMap or Secret (`items` or every key). */
function keyFiles(
  data: Record<string, string> | undefined,
  items: KeyPath[] | undefined,
  mode: number | undefined,
): VolumeFile[] {
  const entries = items ?? Object.keys(data ?? {}).map((key) => ({ key, path: key, mode: undefined }));
  return entries
    .filter((e) => data?.[e.key] !== undefined)
    .map((e) => ({ path: e.path, content: data?.[e.key] ?? '', mode: e.mode ?? mode }));
}

function downwardFiles(
  ctx: RuntimeContext,
  pod: KObject,
  rt: Runtime,
  items: DownwardItem[] | undefined,
  mode?: number,
): VolumeFile[] {
  return (items ?? [])
    .filter((i) => i.fieldRef)
    .map((i) => ({
      path: i.path,
      content: fieldRefValue(ctx, pod, rt, i.fieldRef?.fieldPath ?? ''),
      mode: i.mode ?? mode,
    }));
}

/** The files of a projected volume (ServiceAccount token, ConfigMap, Secret, downward API sources). */
function projectedFiles(
  ctx: RuntimeContext,
  pod: KObject,
  rt: Runtime,
  vol: NonNullable<Volume['projected']>,
): VolumeFile[] {
  const { configMap, secret } = ctx.kinds;
  const out: VolumeFile[] = [];
  const mode = vol.defaultMode;
  for (const src of vol.sources ?? []) {
    if (src.serviceAccountToken)
      out.push({
        path: src.serviceAccountToken.path,
        content: podToken(ctx, pod, rt, src.serviceAccountToken.audience),
        mode,
      });
    else if (src.configMap)
      out.push(
        ...keyFiles(
          lookupKey(ctx, configMap, rt.namespace, src.configMap, 'configmap'),
          src.configMap.items,
          mode,
        ),
      );
    else if (src.secret)
      out.push(
        ...keyFiles(lookupKey(ctx, secret, rt.namespace, src.secret, 'secret'), src.secret.items, mode),
      );
    else if (src.downwardAPI) out.push(...downwardFiles(ctx, pod, rt, src.downwardAPI.items, mode));
  }
  return out;
}

/** Where a claim's volume lives (`<dir>/volumes/<ns>/<claim>`). */
const claimDir = (ctx: RuntimeContext, ns: string, claim: string) => path.join(ctx.dir, 'volumes', ns, claim);

/**
 * Writes ConfigMap/Secret/projected/downwardAPI volumes as files under `<podDir>/mounts/<mountPath>`
 * (one file for a `subPath`), makes emptyDirs, and links PersistentVolumeClaims to
 * `<dir>/volumes/<ns>/<claim>`, which outlives the pod. `refresh`: only the ConfigMap and Secret
 * volumes that are not `subPath` mounts.
 */
export async function writeVolumes(
  ctx: RuntimeContext,
  pod: KObject,
  rt: Runtime,
  refresh = false,
): Promise<void> {
  const spec = pod.spec as PodSpec;
  for (const mount of rt.container.volumeMounts ?? []) {
    const vol = spec.volumes?.find((v) => v.name === mount.name);
    if (!vol) throw new Error(`volume ${mount.name} not found`);
    const target = path.join(rt.dir, 'mounts', mount.mountPath);
    if (refresh && (mount.subPath || !(vol.configMap || vol.secret))) continue;
    if (rt.terminating) return;
    await mkdir(path.dirname(target), { recursive: true });
    if (vol.persistentVolumeClaim) {
      const dir = claimDir(ctx, rt.namespace, vol.persistentVolumeClaim.claimName);
      const source = mount.subPath ? path.join(dir, mount.subPath) : dir;
      await mkdir(source, { recursive: true });
      await symlink(source, target);
      continue;
    }
    let files: VolumeFile[] = [];
    if (vol.configMap) {
      const data = lookupKey(ctx, ctx.kinds.configMap, rt.namespace, vol.configMap, 'configmap');
      files = keyFiles(data, vol.configMap.items, vol.configMap.defaultMode);
    } else if (vol.secret) {
      const data = lookupKey(
        ctx,
        ctx.kinds.secret,
        rt.namespace,
        { name: vol.secret.secretName, optional: vol.secret.optional },
        'secret',
      );
      files = keyFiles(data, vol.secret.items, vol.secret.defaultMode);
    } else if (vol.projected) files = projectedFiles(ctx, pod, rt, vol.projected);
    else if (vol.downwardAPI)
      files = downwardFiles(ctx, pod, rt, vol.downwardAPI.items, vol.downwardAPI.defaultMode);
    if (mount.subPath) {
      const file = files.find((f) => f.path === mount.subPath);
      if (file) await writeFile(target, file.content, { mode: file.mode ?? 0o644 });
      else await mkdir(target, { recursive: true });
      continue;
    }
    await mkdir(target, { recursive: true });
    const written = new Set<string>();
    for (const f of files) {
      const file = path.join(target, f.path);
      written.add(file);
      await mkdir(path.dirname(file), { recursive: true });
      // Atomic replacement, so a process never reads a half-written file.
      const tmp = `${file}.${process.pid}.tmp`;
      await writeFile(tmp, f.content, { mode: f.mode ?? 0o644 });
      await rename(tmp, file);
    }
    for (const file of rt.volumeFiles.get(target) ?? [])
      if (!written.has(file)) await rm(file, { force: true });
    rt.volumeFiles.set(target, written);
  }
}

/** Queues a rewrite of a runtime's ConfigMap/Secret volumes (after the ones queued before). */
export function queueVolumeRefresh(ctx: RuntimeContext, pod: KObject, rt: Runtime): void {
  rt.volumeUpdates = rt.volumeUpdates
    .then(() => writeVolumes(ctx, pod, rt, true))
    .catch((err: unknown) => {
      if (!ctx.stopped && !rt.terminating) ctx.onError(err);
    });
}

/** Rewrites the ConfigMap/Secret volumes of running pods that use a changed object. */
export function refreshVolumes(ctx: RuntimeContext, e: StoreEvent): void {
  const name = e.object.metadata.name;
  for (const rt of ctx.runtimes.values()) {
    if (rt.terminating || !rt.volumesWritten || rt.namespace !== e.namespace) continue;
    const pod = currentPod(ctx, rt);
    const uses = ((pod?.spec as PodSpec | undefined)?.volumes ?? []).some((v) =>
      e.key === '/configmaps' ? v.configMap?.name === name : v.secret?.secretName === name,
    );
    if (!pod || !uses) continue;
    queueVolumeRefresh(ctx, pod, rt);
  }
}

/** A deleted claim releases its volume (dynamic provisioning, reclaimPolicy Delete). */
export function releaseClaim(ctx: RuntimeContext, e: StoreEvent): void {
  void rm(claimDir(ctx, e.namespace, e.object.metadata.name ?? ''), { recursive: true, force: true }).catch(
    () => undefined,
  );
}

/** Rewrites values that are mountPaths (or lie under one) to their host paths. */
export function rewritePaths(
  value: string,
  rt: Pick<Runtime, 'container' | 'implicitMounts' | 'dir'>,
): string {
  const mounts = [...(rt.container.volumeMounts ?? []).map((m) => m.mountPath), ...rt.implicitMounts].sort(
    (a, b) => b.length - a.length,
  );
  const one = (v: string): string => {
    for (const m of mounts) {
      const mp = m.replace(/\/+$/, '');
      if (v === mp || v.startsWith(`${mp}/`)) return path.join(rt.dir, 'mounts', mp) + v.slice(mp.length);
    }
    return v;
  };
  const eq = value.indexOf('=');
  if (eq > 0 && value.slice(eq + 1).startsWith('/')) return value.slice(0, eq + 1) + one(value.slice(eq + 1));
  return one(value);
}
