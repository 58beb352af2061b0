/**
 * The admin HTTP port. Open: GET /metrics, /healthz, /readyz. Everything else needs
 * `Authorization: Bearer <token>` when admin.tokenFile is set (compared in constant time).
 *
 * Whatever a client sends, the answer is a status and a JSON `{"error": ...}`: requests the HTTP parser
 * refuses get 400/431 written on the socket (clientError), a bad request target 400/414, a declared or
 * streamed body over MAX_BODY 413, a known path with another method 405 with `Allow`, anything else 404.
 * Only a handler failing on its own (not an HttpError) answers 500, with a generic message; the error is
 * logged, never sent.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { RelayMetrics } from './metrics.js';
import type { DeliveryEngine } from './delivery/engine.js';
import { secretEquals } from './policy.js';
import type { ConfigResponse, QueueSummary } from './contract/admin-api.js';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface AdminRequest {
  method: string;
  path: string;
  params: string[];
  query: URLSearchParams;
  /** The JSON body; over `maxBytes` (at most and by default MAX_BODY), a 413. */
  body: (maxBytes?: number) => Promise<Record<string, unknown>>;
}
export type AdminHandler = (req: AdminRequest) => Promise<[number, unknown]> | [number, unknown];

export interface AdminDeps {
  metrics: RelayMetrics;
  engine: DeliveryEngine;
  ready: () => boolean;
  /** The bearer token, when the API is protected (read at each request: it hot-reloads). */
  token: () => Buffer | undefined;
  config: () => ConfigResponse & { version: number };
  /** Where internal errors (500) are logged. */
  log?: Logger;
}

const OPEN = new Set(['/metrics', '/healthz', '/readyz']);
/** Largest request body kept (a JSON object); a larger one gets 413. */
export const MAX_BODY = 1024 * 1024;
/**
 * A body over MAX_BODY is answered 413 at once, then read and dropped for at most this long: closing a
 * connection the client is still sending on makes it see a reset instead of the answer. A client still
 * sending after that is cut off.
 */
export const DRAIN_MS = 5000;
/** Longest request target (path and query) in bytes; a longer one gets 414. */
export const MAX_URL = 2048;

export class AdminServer {
  private server?: http.Server;
  private routes: { method: string; re: RegExp; handler: AdminHandler }[] = [];
  port = 0;

  constructor(private readonly d: AdminDeps) {
    const e = d.engine;
    this.route('GET', '/queue', async (r) => {
      const s = e.summary();
      const stats = e.stats();
      const limit = Math.min(Math.max(Number(r.query.get('limit') ?? 100) || 100, 0), 1000);
      return [
        200,
        {
          ...s,
          recovering: e.recovering,
          activeDeliveries: stats.active,
          oldestArrival: stats.oldestArrival ?? null,
          messages: limit ? await e.list(limit) : [],
        } satisfies QueueSummary & Record<string, unknown>,
      ];
    });
    this.route('GET', '/queue/messages', async (r) => [
      200,
      await e.page({
        after: r.query.get('after') ?? undefined,
        limit: Math.min(Math.max(Number(r.query.get('limit') ?? 100) || 100, 1), 1000),
        tenant: r.query.get('tenant') ?? undefined,
        domain: r.query.get('domain')?.toLowerCase() ?? undefined,
        state: r.query.get('state') ?? undefined,
      }),
    ]);
    this.route('POST', '/flush', () => (e.flush(), [202, { status: 'flushing' }]));
    this.route('POST', '/queue/flush', () => (e.flush(), [202, { status: 'flushing' }]));
    this.route('DELETE', '/queue/messages/([0-9A-Z]{20})', async (r) => {
      const result = await e.delete(r.params[0], r.query.get('bounce') === 'true');
      if (result === 'missing') throw new HttpError(404, `no queued message ${r.params[0]}`);
      if (result === 'busy')
        throw new HttpError(409, `message ${r.params[0]} is being delivered right now; try again`);
      return [200, { id: r.params[0], deleted: true, bounced: r.query.get('bounce') === 'true' }];
    });
    this.route('GET', '/config', () => [200, d.config()]);
  }

  /** Registers a handler; `path` is a regular expression source matched against the whole path. */
  route(method: string, path: string, handler: AdminHandler): void {
    this.routes.push({ method, re: new RegExp(`^${path}$`), handler });
  }

  async start(address: string, port: number): Promise<number> {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => this.fail(req, res, e));
    });
    this.server.on('clientError', clientError);
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, address, () => resolve());
    });
    const a = this.server.address();
    this.port = typeof a === 'object' && a ? a.port : port;
    return this.port;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = target(req.url ?? '/');
    const path = url.pathname;
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > MAX_BODY) {
      discard(req);
      throw tooLarge();
    }
    if (OPEN.has(path)) {
      if (method !== 'GET') return notAllowed(res, method, path, ['GET']);
      if (path === '/metrics') {
        const body = await this.d.metrics.registry.metrics();
        res.writeHead(200, { 'content-type': this.d.metrics.registry.contentType }).end(body);
        return;
      }
      if (path === '/healthz') return this.json(res, 200, { status: 'ok' });
      return this.json(res, this.d.ready() ? 200 : 503, { status: this.d.ready() ? 'ready' : 'not ready' });
    }
    const token = this.d.token();
    if (token) {
      const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
      if (!m || !secretEquals(token, m[1])) {
        res.setHeader('www-authenticate', 'Bearer');
        throw new HttpError(401, 'a valid bearer token is required');
      }
    }
    const allowed = new Set<string>();
    for (const r of this.routes) {
      const m = r.re.exec(path);
      if (!m) continue;
      if (r.method !== method) {
        allowed.add(r.method);
        continue;
      }
      const [status, body] = await r.handler({
        method,
        path,
        params: m.slice(1).map(param),
        query: url.searchParams,
        body: (maxBytes = MAX_BODY) => readJson(req, Math.min(maxBytes, MAX_BODY)),
      });
      return this.json(res, status, body);
    }
    if (allowed.size) return notAllowed(res, method, path, [...allowed]);
    throw new HttpError(404, `no such endpoint: ${method} ${path}`);
  }

  /** The answer to a request whose handling threw: its HttpError, or a 500 that tells nothing. */
  private fail(req: http.IncomingMessage, res: http.ServerResponse, e: unknown): void {
    let status = 500;
    let message = 'internal error';
    if (e instanceof HttpError && e.status >= 400 && e.status < 600) {
      status = e.status;
      message = e.message;
    } else {
      this.d.log?.error(
        {
          event: 'admin.error',
          method: req.method,
          path: req.url?.slice(0, 200),
          err: (e as Error)?.message,
        },
        'admin request failed',
      );
    }
    if (res.headersSent) {
      res.destroy(); // an answer already on its way cannot be turned into an error: cut it short
      return;
    }
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: message }) + '\n');
  }

  private json(res: http.ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body) + '\n');
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server!.close(() => r()));
  }
}

/** The path and query of a request target (origin form, or absolute form for http/https). */
function target(raw: string): URL {
  if (Buffer.byteLength(raw) > MAX_URL)
    throw new HttpError(414, `request target too long (at most ${MAX_URL} bytes)`);
  try {
    if (raw.startsWith('/')) return new URL(`http://admin${raw}`);
    if (/^https?:\/\//i.test(raw)) {
      const u = new URL(raw);
      return new URL(`http://admin${u.pathname}${u.search}`);
    }
  } catch {
    // falls through to the 400
  }
  throw new HttpError(400, 'request target must be a path');
}

/** One path parameter, percent-decoded; a malformed escape or a control character is the client's fault. */
function param(p: string): string {
  let v: string;
  try {
    v = decodeURIComponent(p);
  } catch {
    throw new HttpError(400, 'malformed percent-escape in the path');
  }
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(v)) throw new HttpError(400, 'control character in the path');
  return v;
}

function notAllowed(res: http.ServerResponse, method: string, path: string, allowed: string[]): never {
  res.setHeader('allow', allowed.join(', '));
  throw new HttpError(405, `${method} is not allowed on ${path} (allowed: ${allowed.join(', ')})`);
}

/**
 * Answer for requests the HTTP parser refused (no request object exists): written on the socket as Node
 * would, but with a JSON body. Nothing is written when an answer to an earlier request is on its way.
 */
function clientError(err: Error & { code?: string }, socket: Duplex): void {
  const inflight = (socket as { _httpMessage?: http.ServerResponse })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || inflight?.headersSent) {
    socket.destroy();
    return;
  }
  const [status, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'request line and header fields too large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'request timed out']
        : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW'
          ? [413, 'chunk extensions too large']
          : [400, 'malformed HTTP request'];
  const body = JSON.stringify({ error: message }) + '\n';
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

const tooLarge = (max = MAX_BODY) => new HttpError(413, `request body too large (at most ${max} bytes)`);

/** Reads the rest of the request body and drops it; cuts the connection if that takes over DRAIN_MS. */
function discard(req: http.IncomingMessage): void {
  req.resume();
  if (req.complete) return;
  const timer = setTimeout(() => req.socket.destroy(), DRAIN_MS);
  req.once('end', () => clearTimeout(timer)).once('close', () => clearTimeout(timer));
}

/** The request body as a JSON object (empty: {}); over `max` bytes, a 413 at once and the rest discarded. */
function readJson(req: http.IncomingMessage, max: number): Promise<Record<string, unknown>> {
  if (Number(req.headers['content-length'] ?? 0) > max) {
    discard(req);
    return Promise.reject(tooLarge(max));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    const done = (err: HttpError | undefined) => {
      req.off('data', onData).off('end', onEnd).off('close', onGone).off('error', onGone);
      if (err) return reject(err);
      try {
        resolve(parseObject(Buffer.concat(chunks, n)));
      } catch (e) {
        reject(e as Error);
      }
    };
    const onData = (c: Buffer) => {
      n += c.length;
      if (n <= max) return void chunks.push(c);
      done(tooLarge(max));
      discard(req);
    };
    const onEnd = () => done(undefined);
    const onGone = () => done(new HttpError(400, 'request body cut short'));
    req.on('data', onData).once('end', onEnd).once('close', onGone).once('error', onGone);
  });
}

function parseObject(raw: Buffer): Record<string, unknown> {
  if (!raw.length) return {};
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw new HttpError(400, `request body must be a JSON object: ${(e as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new HttpError(400, 'request body must be a JSON object: not an object');
  return v as Record<string, unknown>;
}
