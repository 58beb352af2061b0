/** Kubernetes objects as the operator builds them, and comparisons for "apply only what differs". */

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type KObject = { apiVersion: string; kind: string; metadata: Record<string, any>; [k: string]: any };

/**
 * True when every field of `want` is present in `have` with the same value (lists element by element,
 * same length). Fields the API server added (defaults, status, metadata) do not matter.
 */
export function isSubset(want: unknown, have: unknown): boolean {
  if (want === have) return true;
  if (Array.isArray(want)) {
    if (!Array.isArray(have) || have.length !== want.length) return false;
    return want.every((w, i) => isSubset(w, have[i]));
  }
  if (want && typeof want === 'object') {
    if (!have || typeof have !== 'object' || Array.isArray(have)) return false;
    const h = have as Record<string, unknown>;
    return Object.entries(want as Record<string, unknown>).every(
      ([k, v]) => v === undefined || isSubset(v, h[k]),
    );
  }
  // the API server may store numbers as given; compare numeric strings loosely only for quantities
  return false;
}

/** JSON with sorted keys, for change detection. */
export function stableJson(v: unknown): string {
  return JSON.stringify(sortKeys(v));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object')
    return Object.fromEntries(
      Object.keys(v as object)
        .sort()
        .map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
    );
  return v;
}

/**
 * A JSON merge patch (RFC 7386) that turns `from` into `to`: keys of `from` missing in `to` become
 * null (deleted); nested objects are diffed the same way; arrays and other values are replaced.
 */
export function mergePatchFor(from: unknown, to: unknown): unknown {
  const isObj = (v: unknown): v is Record<string, unknown> =>
    !!v && typeof v === 'object' && !Array.isArray(v);
  if (!isObj(from) || !isObj(to)) return to;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(from)) if (!(k in to) || to[k] === undefined) out[k] = null;
  for (const [k, v] of Object.entries(to))
    if (v !== undefined) out[k] = k in from ? mergePatchFor(from[k], v) : v;
  return out;
}
