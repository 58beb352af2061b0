/**
 * The admin HTTP port. Open: GET /metrics, /healthz, /readyz. Everything else needs
 * `Authorization: Bearer <token>` when admin.tokenFile is set (compared in constant time).
 */
import http from 'node:http';
import type { RelayMetrics } from './metrics.js';
import type { DeliveryEngine } from './delivery/engine.js';
import { secretEquals } from './policy.js';

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
  body: () => Promise<Record<string, unknown>>;
}
export type AdminHandler = (req: AdminRequest) => Promise<[number, unknown]> | [number, unknown];

export interface AdminDeps {
  metrics: RelayMetrics;
  engine: DeliveryEngine;
  ready: () => boolean;
  /** The bearer token, when the API is protected (read at each request: it hot-reloads). */
  token: () => Buffer | undefined;
  config: () => { version: number; hash: string };
}

const OPEN = new Set(['GET /metrics', 'GET /healthz', 'GET /readyz']);
const MAX_BODY = 1024 * 1024;

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
        },
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
      this.handle(req, res).catch((e: Error) => {
        const status = e instanceof HttpError ? e.status : 500;
        if (!res.headersSent) res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: e.message }) + '\n');
      });
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, address, () => resolve());
    });
    const a = this.server.address();
    this.port = typeof a === 'object' && a ? a.port : port;
    return this.port;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const method = req.method ?? 'GET';
    const key = `${method} ${url.pathname}`;
    if (key === 'GET /metrics') {
      const body = await this.d.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': this.d.metrics.registry.contentType }).end(body);
      return;
    }
    if (key === 'GET /healthz') return this.json(res, 200, { status: 'ok' });
    if (key === 'GET /readyz')
      return this.json(res, this.d.ready() ? 200 : 503, { status: this.d.ready() ? 'ready' : 'not ready' });
    if (!OPEN.has(key)) {
      const token = this.d.token();
      if (token) {
        const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
        if (!m || !secretEquals(token, m[1])) {
          res.setHeader('www-authenticate', 'Bearer');
          throw new HttpError(401, 'a valid bearer token is required');
        }
      }
    }
    for (const r of this.routes) {
      if (r.method !== method) continue;
      const m = r.re.exec(url.pathname);
      if (!m) continue;
      const [status, body] = await r.handler({
        method,
        path: url.pathname,
        params: m.slice(1).map((p) => decodeURIComponent(p)),
        query: url.searchParams,
        body: () => readJson(req),
      });
      return this.json(res, status, body);
    }
    throw new HttpError(404, `no such endpoint: ${key}`);
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

async function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > MAX_BODY) throw new HttpError(413, 'request body too large');
    chunks.push(c as Buffer);
  }
  if (!n) return {};
  try {
    const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new HttpError(400, `request body must be a JSON object: ${(e as Error).message}`);
  }
}
