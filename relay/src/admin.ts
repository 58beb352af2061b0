/** The admin HTTP port: /metrics, /healthz, /readyz, GET /queue, POST /flush. */
import http from 'node:http';
import type { RelayMetrics } from './metrics.js';
import type { DeliveryEngine } from './queue.js';

export interface AdminDeps {
  metrics: RelayMetrics;
  engine: DeliveryEngine;
  ready: () => boolean;
}

export class AdminServer {
  private server?: http.Server;
  port = 0;
  constructor(private readonly d: AdminDeps) {}

  async start(address: string, port: number): Promise<number> {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e: Error) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e.message}\n`);
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

  private json(res: http.ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body) + '\n');
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const route = `${req.method} ${url.pathname}`;
    switch (route) {
      case 'GET /metrics': {
        const body = await this.d.metrics.registry.metrics();
        res.writeHead(200, { 'content-type': this.d.metrics.registry.contentType }).end(body);
        return;
      }
      case 'GET /healthz':
        return this.json(res, 200, { status: 'ok' });
      case 'GET /readyz':
        return this.d.ready()
          ? this.json(res, 200, { status: 'ready' })
          : this.json(res, 503, { status: 'not ready' });
      case 'GET /queue': {
        const s = this.d.engine.stats();
        const limit = Math.min(Number(url.searchParams.get('limit') ?? 100) || 100, 10_000);
        return this.json(res, 200, {
          depth: s.depth,
          activeDeliveries: s.active,
          byTenant: Object.fromEntries(s.byTenant),
          oldestArrival: s.oldestArrival ?? null,
          messages: this.d.engine.list(limit),
        });
      }
      case 'POST /flush':
        this.d.engine.flush();
        return this.json(res, 202, { status: 'flushing' });
      default:
        return this.json(res, 404, { error: `no such endpoint: ${route}` });
    }
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server!.close(() => r()));
  }
}
