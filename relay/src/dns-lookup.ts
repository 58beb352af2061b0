/**
 * One DNS query's result as the relay's parts judge it (dns.ts for delivery, identity/ for FCrDNS and DKIM
 * records, feedback/peer-lookup.ts): the records, or why there are none; and one query bounded in time
 * whatever c-ares does.
 */
export type DnsLookup<T> =
  | { ok: true; records: T[] }
  /** nxdomain: the name does not exist; nodata: no record of this type; temporary: may differ later. */
  | { ok: false; failure: 'nxdomain' | 'nodata' | 'badname' | 'temporary'; code: string };

/** Sorts node's resolver errors (c-ares codes) into what they mean. */
export function classifyDnsError(err: unknown): DnsLookup<never> {
  const code = (err as NodeJS.ErrnoException | undefined)?.code ?? 'EUNKNOWN';
  switch (code) {
    case 'ENOTFOUND':
      return { ok: false, failure: 'nxdomain', code };
    case 'ENODATA':
      return { ok: false, failure: 'nodata', code };
    case 'EBADNAME':
      return { ok: false, failure: 'badname', code };
    default:
      // ESERVFAIL, ETIMEOUT, ECONNREFUSED, EREFUSED, EBADRESP, ECANCELLED, ...: the answer may differ later.
      return { ok: false, failure: 'temporary', code };
  }
}

/** Runs one query, failing with ETIMEOUT after `timeoutMs`. */
export async function queryWithin<T>(run: () => Promise<T[]>, timeoutMs: number): Promise<DnsLookup<T>> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(Object.assign(new Error('DNS query timed out'), { code: 'ETIMEOUT' })),
      timeoutMs,
    );
  });
  try {
    return { ok: true, records: await Promise.race([run(), deadline]) };
  } catch (e) {
    return classifyDnsError(e);
  } finally {
    clearTimeout(timer);
  }
}
