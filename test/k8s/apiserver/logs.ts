/**
 * The `pods/log` subresource (`kubectl logs`): container output read from the log files the node
 * writes. The server knows no node: whatever runs the pods (the process kubelet) registers a
 * `PodLogSource` that names each container's log file and says whether its process runs.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError, badRequest } from './errors.js';
import type { ResourceRequest } from './handlers.js';
import type { ServerContext } from './http.js';

export interface PodRef {
  namespace: string;
  name: string;
  uid: string;
}

/** What the server asks the node about a pod's logs. */
export interface PodLogSource {
  /** The container's log file (it need not exist yet); undefined when the node has none for the pod. */
  logFile(pod: PodRef, container: string): string | undefined;
  /** Whether the container's process is running now: a `follow` ends once it is not. */
  running(pod: PodRef, container: string): boolean;
}

/** How often a follow looks for new output. */
const FOLLOW_POLL_MS = 100;
const CHUNK = 64 * 1024;

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function intParam(query: URLSearchParams, name: string, min: number): number | undefined {
  const raw = query.get(name);
  if (raw === null || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min)
    throw new ApiError(
      422,
      'Invalid',
      `PodLogOptions "" is invalid: ${name}: Invalid value: ${raw}: must be >= ${min}`,
    );
  return n;
}

const boolParam = (query: URLSearchParams, name: string) => ['true', '1'].includes(query.get(name) ?? '');

interface PodSpecLike {
  containers?: { name?: string }[];
  initContainers?: { name?: string }[];
}

/** The container the request is for: `container`, or the only one; 400 as kube-apiserver answers. */
function containerOf(podName: string, spec: PodSpecLike, asked: string | null): string {
  const names = (spec.containers ?? []).map((c) => c.name ?? '');
  const initNames = (spec.initContainers ?? []).map((c) => c.name ?? '');
  if (!asked) {
    if (names.length === 1) return names[0];
    let msg = `a container name must be specified for pod ${podName}, choose one of: [${names.join(' ')}]`;
    if (initNames.length) msg += ` or one of the init containers: [${initNames.join(' ')}]`;
    throw badRequest(msg);
  }
  if (!names.includes(asked) && !initNames.includes(asked))
    throw badRequest(`container ${asked} is not valid for pod ${podName}`);
  return asked;
}

/** Where the last `lines` lines of the file start (reading backwards, a chunk at a time). */
async function tailStart(fh: FileHandle, size: number, lines: number): Promise<number> {
  if (lines === 0) return size;
  const buf = Buffer.alloc(CHUNK);
  let end = size;
  let count = 0;
  let skipLast = true; // a newline that ends the file ends the last line, it does not start one
  while (end > 0) {
    const from = Math.max(0, end - CHUNK);
    const { bytesRead } = await fh.read(buf, 0, end - from, from);
    for (let i = bytesRead - 1; i >= 0; i--) {
      if (skipLast) {
        skipLast = false;
        if (from + i === size - 1 && buf[i] === 0x0a) continue;
      }
      if (buf[i] === 0x0a && ++count === lines) return from + i + 1;
    }
    end = from;
  }
  return 0;
}

async function openIfExists(file: string | undefined): Promise<FileHandle | undefined> {
  if (!file) return undefined;
  try {
    return await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * GET .../pods/<name>/log: `container`, `tailLines`, `limitBytes`, `follow` and `previous` (always a
 * 400: no previous logs are kept); `timestamps`, `sinceSeconds` and `sinceTime` are ignored.
 */
export async function handlePodLog(
  ctx: ServerContext,
  req: IncomingMessage,
  res: ServerResponse,
  rr: ResourceRequest,
  query: URLSearchParams,
): Promise<void> {
  const podT = ctx.registry.find('', 'v1', 'pods')!;
  const podName = rr.name ?? '';
  const pod = ctx.store.get(podT, rr.namespace, podName); // 404 NotFound when missing
  const container = containerOf(podName, (pod.spec ?? {}) as PodSpecLike, query.get('container'));
  const tailLines = intParam(query, 'tailLines', 0);
  const limitBytes = intParam(query, 'limitBytes', 1);
  const follow = boolParam(query, 'follow');
  if (boolParam(query, 'previous'))
    throw badRequest(`previous terminated container "${container}" in pod "${podName}" not found`);

  const ref: PodRef = { namespace: rr.namespace, name: podName, uid: pod.metadata.uid ?? '' };
  const source = ctx.podLogs;
  const file = source?.logFile(ref, container);
  const running = () => source?.running(ref, container) ?? false;

  let closed = false;
  res.on('close', () => (closed = true));
  req.on('close', () => (closed = true));
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Cache-Control': 'no-cache, private' });
  if (follow) res.flushHeaders();

  let left = limitBytes ?? Infinity;
  let fh = await openIfExists(file);
  try {
    let pos = fh && tailLines !== undefined ? await tailStart(fh, (await fh.stat()).size, tailLines) : 0;
    const buf = Buffer.alloc(CHUNK);
    /** Sends what the file holds after `pos`; false once `limitBytes` is used up or the client left. */
    const drain = async (): Promise<boolean> => {
      if (!fh) return !closed;
      for (;;) {
        if (closed) return false;
        if (left <= 0) return false;
        const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, left), pos);
        if (bytesRead === 0) return true;
        pos += bytesRead;
        left -= bytesRead;
        // Copy: `buf` is reused for the next read while this chunk may still be queued.
        if (!res.write(Buffer.from(buf.subarray(0, bytesRead))))
          await new Promise<void>((resolve) => {
            const done = () => (res.off('drain', done), res.off('close', done), resolve());
            res.on('drain', done).on('close', done);
          });
      }
    };
    if ((await drain()) && follow) {
      while (!closed) {
        const wasRunning = running();
        await pause(FOLLOW_POLL_MS);
        fh ??= await openIfExists(file);
        if (!(await drain())) break;
        // Output written before the process ended is in the file by now (its stdout is the file).
        if (!wasRunning && !running()) break;
      }
    }
  } finally {
    await fh?.close();
  }
  if (!closed) res.end();
}
