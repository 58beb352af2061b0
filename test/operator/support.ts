/**
 * Test support for the operator runtime: kubeconfigs for the test API server (per user token, or
 * pointed at a proxy) and an HTTP proxy that can misbehave like a network: refuse requests, hold
 * them unanswered, freeze open streams (a silently dead connection), or end or break them.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import type { KObject } from '@cartero/k8s-testbed/apiserver/objects.js';
import type { ApiServer } from '@cartero/k8s-testbed/apiserver/server.js';

/** A KubeConfig for `server` (http, so insecure-skip-tls-verify, as client-node requires) with a bearer token. */
export function kubeConfig(server: string, token: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'test', server, skipTLSVerify: true }],
    users: [{ name: 'user', token }],
    contexts: [{ name: 'test', cluster: 'test', user: 'user', namespace: 'default' }],
    currentContext: 'test',
  });
  return kc;
}

/** Store access by resource, bypassing HTTP (for arranging state and reading it back). */
export function storeOf(api: ApiServer, group: string, version: string, plural: string) {
  const t = api.registry.find(group, version, plural);
  if (!t) throw new Error(`no resource ${group}/${version}/${plural}`);
  return {
    create: (namespace: string, obj: KObject) => api.store.create(t, namespace, obj),
    update: (namespace: string, name: string, obj: KObject) => api.store.update(t, namespace, name, obj),
    get: (namespace: string, name: string) => api.store.get(t, namespace, name),
    delete: (namespace: string, name: string) => api.store.delete(t, namespace, name),
    list: (namespace?: string) => api.store.list(t, { namespace }).items,
  };
}

export function createNamespace(api: ApiServer, name: string): void {
  storeOf(api, '', 'v1', 'namespaces').create('', { metadata: { name } });
}

/**
 * pass: forward; refuse: drop the connection of every new request; blackhole: accept new requests
 * and never answer them.
 */
export type ProxyMode = 'pass' | 'refuse' | 'blackhole';

export interface TestProxy {
  url: string;
  mode: ProxyMode;
  /** Responses being forwarded now (watch streams, mostly). */
  streams(): number;
  /** Requests refused so far. */
  refused(): number;
  /** Stops forwarding anything on the open streams, leaving the connections open. */
  freeze(): number;
  /** Ends the open streams cleanly, as a server ending a watch does. */
  closeStreams(): number;
  /** Breaks the open streams' connections. */
  dropStreams(): number;
  stop(): Promise<void>;
}

interface Stream {
  res: http.ServerResponse;
  upstream: http.ClientRequest;
  frozen: boolean;
  over: boolean;
}

const HOP_BY_HOP = ['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade'];

export async function startProxy(upstream: string): Promise<TestProxy> {
  const target = new URL(upstream);
  const streams = new Set<Stream>();
  const held = new Set<http.ServerResponse>();
  let refusals = 0;
  const proxy = { mode: 'pass' as ProxyMode };

  const server = http.createServer((req, res) => {
    if (proxy.mode === 'refuse') {
      refusals++;
      req.socket.destroy();
      return;
    }
    if (proxy.mode === 'blackhole') {
      held.add(res);
      res.on('close', () => held.delete(res));
      return;
    }
    const up = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (ures) => {
        const headers = { ...ures.headers };
        for (const h of HOP_BY_HOP) delete headers[h];
        res.writeHead(ures.statusCode ?? 502, headers);
        res.flushHeaders();
        const s: Stream = { res, upstream: up, frozen: false, over: false };
        streams.add(s);
        const finish = () => {
          s.over = true;
          streams.delete(s);
        };
        ures.on('data', (chunk: Buffer) => {
          if (!s.frozen && !s.over) res.write(chunk);
        });
        ures.on('end', () => {
          if (s.frozen || s.over) return; // a frozen connection stays open and silent
          finish();
          res.end();
        });
        ures.on('error', () => {
          if (s.over) return;
          finish();
          res.destroy();
        });
        res.on('close', () => {
          finish();
          up.destroy();
        });
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  const each = (fn: (s: Stream) => void): number => {
    const open = [...streams].filter((s) => !s.over);
    open.forEach(fn);
    return open.length;
  };
  return {
    url: `http://127.0.0.1:${port}`,
    get mode() {
      return proxy.mode;
    },
    set mode(m: ProxyMode) {
      proxy.mode = m;
    },
    streams: () => [...streams].filter((s) => !s.over).length,
    refused: () => refusals,
    freeze: () => each((s) => (s.frozen = true)),
    closeStreams: () =>
      each((s) => {
        s.over = true;
        streams.delete(s);
        s.upstream.destroy();
        s.res.end();
      }),
    dropStreams: () =>
      each((s) => {
        s.over = true;
        streams.delete(s);
        s.upstream.destroy();
        s.res.socket?.destroy();
      }),
    async stop() {
      for (const res of held) res.socket?.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
