/**
 * DNS identity checks: the lookups each judge needs (identity/resolver.ts), then the judge
 * (identity/judge.ts). Used by POST /dns/checks (identity/admin.ts) and the relay's own periodic check
 * of its pool addresses (identity/monitor.ts).
 */
import type { DkimTxtCheck, FcrdnsCheck } from '../contract/admin-api.js';
import { judgeDkimTxt, judgeFcrdns, normalizeName, ptrNames, type DnsLookup } from './judge.js';
import type { IdentityResolver } from './resolver.js';

/** PTR of `ip`, then A/AAAA of each PTR name (at most MAX_PTR_NAMES), judged against `ehlo`. */
export async function checkFcrdns(r: IdentityResolver, ip: string, ehlo: string): Promise<FcrdnsCheck> {
  const ptr = await r.reverse(ip);
  const names = ptrNames(ptr);
  const forward = new Map<string, DnsLookup<string>>(
    await Promise.all(names.map(async (n) => [n, await r.addresses(n)] as const)),
  );
  const v = judgeFcrdns({ ip, ehlo, ptr, forward });
  return { ip, ehlo, result: v.result, ptr: v.ptr, message: v.message };
}

/** TXT of `<selector>._domainkey.<domain>`, judged against the record the key needs. */
export async function checkDkimTxt(
  r: IdentityResolver,
  domain: string,
  selector: string,
  record: string,
): Promise<DkimTxtCheck> {
  const name = `${selector}._domainkey.${normalizeName(domain)}`;
  const v = judgeDkimTxt({ expected: record, txt: await r.txt(name) });
  return { domain, selector, name, result: v.result, message: v.message };
}
