/** Requests to the test API server as its admin (the kubeconfig's token), for tests that talk JSON to it. */
import type { ApiServer } from '../apiserver/server.js';

/**
 * `method urlPath` with `body` as JSON (sent as `contentType`, default application/json): the status
 * and the parsed answer, typed `B` (instantiate it for a file's own object type: `apiRequest<Obj>`).
 */
export async function apiRequest<B = Record<string, unknown>>(
  server: Pick<ApiServer, 'url' | 'token'>,
  method: string,
  urlPath: string,
  body?: unknown,
  contentType = 'application/json',
): Promise<{ status: number; body: B }> {
  const res = await fetch(server.url + urlPath, {
    method,
    headers: { Authorization: `Bearer ${server.token}`, 'Content-Type': contentType },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as B };
}
