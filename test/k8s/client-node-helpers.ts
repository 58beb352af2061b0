/** Shared helpers for the @kubernetes/client-node conformance tests (client-node*.test.ts). */
import assert from 'node:assert/strict';
import { ApiException, KubeConfig } from '@kubernetes/client-node';

/** The Status body of a failed call, parsed: client-node 1.4.0 hands it over as the raw response text. */
export interface StatusBody {
  kind?: string;
  status?: string;
  code?: number;
  reason?: string;
  message?: string;
  details?: { name?: string; group?: string; kind?: string; causes?: Record<string, string>[] };
}

/** A KubeConfig loaded from the test server's kubeconfig file, as the operator will load one. */
export function kubeConfigFrom(file: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(file);
  return kc;
}

/** A KubeConfig for the same server with another bearer token (another user). */
export function kubeConfigWithToken(server: string, token: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server, skipTLSVerify: true }],
    users: [{ name: 'u', token }],
    contexts: [{ name: 'ctx', cluster: 'c', user: 'u', namespace: 'default' }],
    currentContext: 'ctx',
  });
  return kc;
}

/**
 * Awaits a call that must fail with an ApiException of HTTP code `code`; returns the exception and
 * its parsed Status body (undefined when the client gave no body, as it does for 401).
 */
export async function apiFailure(
  call: Promise<unknown>,
  code: number,
): Promise<{ err: ApiException<unknown>; status: StatusBody | undefined }> {
  try {
    await call;
  } catch (err) {
    assert.ok(err instanceof ApiException, `expected an ApiException, got ${String(err)}`);
    assert.equal(err.code, code, `HTTP code of ${err.message}`);
    const status =
      typeof err.body === 'string' && err.body !== '' ? (JSON.parse(err.body) as StatusBody) : undefined;
    return { err: err as ApiException<unknown>, status };
  }
  assert.fail(`expected the call to fail with ${code}`);
}

/** Names the managers in metadata.managedFields with their operation and (sub)resource. */
export function managers(obj: {
  metadata?: { managedFields?: { manager?: string; operation?: string; subresource?: string }[] };
}): string[] {
  return (obj.metadata?.managedFields ?? [])
    .map((e) => `${e.manager}/${e.operation}${e.subresource ? `/${e.subresource}` : ''}`)
    .sort();
}

/** The fieldsV1 tree one manager owns (undefined when it owns nothing). */
export function ownedBy(
  obj: { metadata?: { managedFields?: { manager?: string; operation?: string; fieldsV1?: object }[] } },
  manager: string,
  operation = 'Apply',
): Record<string, unknown> | undefined {
  const entry = obj.metadata?.managedFields?.find((e) => e.manager === manager && e.operation === operation);
  return entry?.fieldsV1 as Record<string, unknown> | undefined;
}
