/** One line of text for an error, with the API server's message for an ApiException. */
import { ApiException } from '@kubernetes/client-node';

export function errorText(e: unknown): string {
  if (e instanceof ApiException) {
    let body = e.body as unknown;
    if (typeof body === 'string') {
      try {
        body = JSON.parse(body);
      } catch {
        /* keep the text */
      }
    }
    const msg = (body as { message?: string } | undefined)?.message ?? String(e.body).slice(0, 200);
    return `${e.code}: ${msg}`;
  }
  return e instanceof Error ? e.message : String(e);
}

/** Runs a delete, counting 404 (already gone) as done. */
export async function ignoreNotFound(p: Promise<unknown>): Promise<void> {
  await p.catch((e: unknown) => {
    if (!(e instanceof ApiException && e.code === 404)) throw e;
  });
}
