/** HTTP plumbing: request bodies, JSON responses, errors as Status, and the shared server context. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parse as parseYaml } from 'yaml';
import { ApiError, badRequest, toApiError, unsupportedMediaType } from './errors.js';
import type { PodLogSource } from './logs.js';
import type { KObject } from './objects.js';
import type { Registry, ResourceType } from './resources.js';
import type { Store } from './store.js';

const MAX_BODY = 3 * 1024 * 1024;

/** Decodes a request body of one media type (JSON and YAML built in; protobuf can be added). */
export type BodyDecoder = (body: Buffer, ctx: { t?: ResourceType; version?: string }) => unknown;

/**
 * Applies a PATCH body of one media type to the current object. `current` is undefined when the
 * object does not exist; patchers that cannot create (all but server-side apply) throw 404 then.
 */
export type Patcher = (
  current: KObject | undefined,
  body: Buffer,
  ctx: { t: ResourceType; version: string; query: URLSearchParams; user: string; subresource?: string },
) => KObject;

/** Renders an object or a list as a meta.k8s.io Table (for `kubectl get` columns). */
export type TableRenderer = (
  t: ResourceType,
  version: string,
  objectOrList: Record<string, unknown>,
  query: URLSearchParams,
) => unknown;

/** Records a non-apply write in metadata.managedFields; returns `next` with them. */
export type FieldTracker = (
  t: ResourceType,
  version: string,
  old: KObject | undefined,
  next: KObject,
  manager: string,
  subresource?: string,
) => KObject;

/** Validates (defaults, prunes) a body before it is stored; returns the object to store and warnings. */
export type BodyValidator = (
  t: ResourceType,
  version: string,
  obj: KObject,
  query: URLSearchParams,
) => { object: KObject; warnings: string[] };

export interface ServerContext {
  store: Store;
  registry: Registry;
  decoders: Map<string, BodyDecoder>;
  patchers: Map<string, Patcher>;
  tableRenderer?: TableRenderer;
  fieldTracker?: FieldTracker;
  validator?: BodyValidator;
  /** Ends every open watch (on stop); `reset` drops the connection instead of ending the stream. */
  watches: Set<(reset?: boolean) => void>;
  /** How often watches with allowWatchBookmarks get a BOOKMARK (default 30 s). */
  bookmarkIntervalMs?: number;
  /** Where `pods/log` reads container logs (registered by the process kubelet). */
  podLogs?: PodLogSource;
}

export function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0].trim().toLowerCase();
}

export async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new ApiError(413, 'RequestEntityTooLarge', 'the request is too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

export const defaultDecoders = (): Map<string, BodyDecoder> =>
  new Map<string, BodyDecoder>([
    ['application/json', (b) => JSON.parse(b.toString('utf8'))],
    ['', (b) => JSON.parse(b.toString('utf8'))],
    ['application/yaml', (b) => parseYaml(b.toString('utf8'))],
  ]);

/** Decodes a body by its Content-Type; 400 on malformed input, 415 on unknown media types. */
export function decodeBody(
  ctx: ServerContext,
  req: IncomingMessage,
  body: Buffer,
  t?: ResourceType,
  version?: string,
): unknown {
  const type = mediaType(req.headers['content-type']);
  const decoder = ctx.decoders.get(type);
  if (!decoder) throw unsupportedMediaType(type, [...ctx.decoders.keys()]);
  try {
    return decoder(body, { t, version });
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw badRequest(`error decoding request body: ${err instanceof Error ? err.message : String(err)}`);
  }
}

export function sendJson(
  res: ServerResponse,
  code: number,
  body: unknown,
  contentType = 'application/json',
): void {
  const text = JSON.stringify(body);
  res.writeHead(code, {
    'Content-Type': contentType,
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-cache, private',
  });
  res.end(text);
}

export function sendError(res: ServerResponse, err: unknown): void {
  const e = toApiError(err);
  if (res.headersSent) {
    res.end();
    return;
  }
  sendJson(res, e.code, e.toStatus());
}

export function sendStatusSuccess(res: ServerResponse, details?: Record<string, unknown>): void {
  sendJson(res, 200, {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Success',
    ...(details ? { details } : {}),
  });
}
