/**
 * Signing one message as it is accepted: `planSigning` decides from the header section (held until its
 * empty line, receive.ts) which keys sign, `MessageSigner` hashes the body while it streams to disk and
 * gives the DKIM-Signature fields at the end of DATA. They are stored in the envelope (`dkim`) and put in
 * front of the message at delivery, so our own later additions (Received, the hand-off header) stay outside.
 */
import type { TenantDkim } from '../contract/config-types.js';
import { RelaxedBodyHash } from './canon.js';
import {
  dkimSignature,
  fromDomain,
  headerComplete,
  keysFor,
  parseHeaderFields,
  type DkimKey,
  type HeaderField,
} from './sign.js';

/** Why a message of a tenant with DKIM keys is not signed (a metric label and the 550's reason). */
export type UnsignedReason = 'no-key' | 'no-from-domain' | 'malformed-header';

export type SigningPlan =
  { sign: DkimKey[]; fields: HeaderField[]; domain: string } | { unsigned: UnsignedReason; domain?: string };

/** Which keys sign a message with this header section (its bytes up to and including the empty line). */
export function planSigning(dkim: TenantDkim, head: Buffer): SigningPlan {
  if (!headerComplete(head)) return { unsigned: 'malformed-header' };
  const fields = parseHeaderFields(head);
  const domain = fromDomain(fields);
  if (!domain) return { unsigned: 'no-from-domain' };
  const keys = keysFor(dkim.keys, domain);
  return keys.length ? { sign: keys, fields, domain } : { unsigned: 'no-key', domain };
}

/** The text of the 550 for a message refused under `unmatched: refuse`. */
export function refusalText(reason: UnsignedReason, domain?: string): string {
  switch (reason) {
    case 'no-key':
      return `No DKIM key for the From domain ${domain}: this sender may only send signed mail`;
    case 'no-from-domain':
      return 'Cannot sign: the message needs exactly one From header field with addresses of one domain';
    case 'malformed-header':
      return 'Cannot sign: the header section does not end with an empty line';
  }
}

export class MessageSigner {
  private readonly body = new RelaxedBodyHash();

  constructor(
    private readonly keys: DkimKey[],
    private readonly fields: HeaderField[],
    private readonly expiryMs?: number,
  ) {}

  /** Body bytes (after the header section's empty line), in order. */
  update(chunk: Buffer): void {
    this.body.update(chunk);
  }

  /** One DKIM-Signature field per key, each ending in CRLF, signed at `now` (ms). */
  finish(now: number): string {
    const bodyHash = this.body.digest();
    const time = Math.floor(now / 1000);
    const expires = this.expiryMs !== undefined ? Math.floor((now + this.expiryMs) / 1000) : undefined;
    return this.keys
      .map((key) =>
        dkimSignature({
          key,
          fields: this.fields,
          bodyHash,
          time,
          ...(expires !== undefined ? { expires } : {}),
        }),
      )
      .join('');
  }
}
