/**
 * One JSON request to the Kubernetes API at a raw path, authenticated and TLS-configured from a
 * KubeConfig (client-node's `applyToHTTPSOptions`: bearer token, client certificates, CA,
 * insecure-skip-tls-verify, proxies). The informer lists with it: client-node 1.4.0 has no
 * path-based list call (`KubernetesObjectApi.list` wants apiVersion and kind, and resolves them
 * through discovery).
 */
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';

/** A non-2xx answer; `statusCode` is the HTTP status, `reason` the Status reason when there is one. */
export class ApiRequestError extends Error {
  constructor(
    readonly statusCode: number,
    readonly reason: string,
    message: string,
    readonly body?: unknown,
  ) {
    super(message);
    this.name = 'ApiRequestError';
  }
}

export interface RequestOptions {
  query?: Record<string, string | undefined>;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
  /** Abort when the whole exchange takes longer (default 60 000 ms). */
  timeoutMs?: number;
}

/** The full URL of an API path on the current cluster (keeping any path prefix of the server URL). */
export function apiUrl(kc: KubeConfig, path: string, query: Record<string, string | undefined> = {}): URL {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  const url = new URL(cluster.server.replace(/\/+$/, '') + path);
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
  return url;
}

export async function requestJson<T>(
  kc: KubeConfig,
  method: string,
  path: string,
  opts: RequestOptions = {},
): Promise<T> {
  const url = apiUrl(kc, path, opts.query);
  const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
  const options: https.RequestOptions = {
    method,
    headers: {
      Accept: 'application/json',
      ...(payload ? { 'Content-Type': opts.contentType ?? 'application/json' } : {}),
    },
  };
  await kc.applyToHTTPSOptions(options);
  const signals = [AbortSignal.timeout(opts.timeoutMs ?? 60_000), ...(opts.signal ? [opts.signal] : [])];
  options.signal = AbortSignal.any(signals);
  const transport = url.protocol === 'https:' ? https : http;
  return new Promise<T>((resolve, reject) => {
    const req = transport.request(url, options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = text ? JSON.parse(text) : undefined;
        } catch {
          // not JSON: keep the text
        }
        const code = res.statusCode ?? 0;
        if (code >= 200 && code < 300) {
          resolve(body as T);
          return;
        }
        const status = (typeof body === 'object' && body !== null ? body : {}) as {
          reason?: string;
          message?: string;
        };
        reject(
          new ApiRequestError(
            code,
            status.reason ?? http.STATUS_CODES[code] ?? '',
            `${method} ${url.pathname}: ${code} ${status.message ?? (typeof body === 'string' ? body : '')}`.trim(),
            body,
          ),
        );
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}
