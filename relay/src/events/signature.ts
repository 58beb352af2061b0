/**
 * Webhook signatures (docs/events.md): `Cartero-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, the
 * HMAC keyed with the endpoint's secret over `<t>.<body>`. Receivers recompute it, compare in constant
 * time and refuse timestamps too far from their clock (replay).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'Cartero-Signature';

export function sign(secret: Buffer | string, body: Buffer | string, unixSeconds: number): string {
  const mac = createHmac('sha256', secret).update(`${unixSeconds}.`).update(body).digest('hex');
  return `t=${unixSeconds},v1=${mac}`;
}

/**
 * Checks a signature header against `body`: valid when a v1 value matches and `t` is within `toleranceS`
 * of `nowS`. Used by the tests and given in the docs as the receiver's recipe.
 */
export function verify(
  secret: Buffer | string,
  body: Buffer | string,
  header: string,
  nowS: number,
  toleranceS = 300,
): boolean {
  const parts = header.split(',').map((p) => p.trim().split('='));
  const t = Number(parts.find(([k]) => k === 't')?.[1]);
  if (!Number.isInteger(t) || Math.abs(nowS - t) > toleranceS) return false;
  const want = Buffer.from(sign(secret, body, t).split('v1=')[1], 'hex');
  return parts
    .filter(([k, v]) => k === 'v1' && v !== undefined && /^[0-9a-f]{64}$/.test(v))
    .some(([, v]) => timingSafeEqual(Buffer.from(v, 'hex'), want));
}
