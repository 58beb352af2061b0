/** Splits an RFC 3464 DSN into its parts for field-by-field assertions. */
export interface ParsedDsn {
  reportType: string;
  /** Per-message fields, lower-cased names. */
  message: Record<string, string>;
  /** Per-recipient field groups, lower-cased names. */
  recipients: Record<string, string>[];
  /** The third part (original message or headers) as text, and its content type. */
  original: string;
  originalType: string;
}

function fields(block: string): Record<string, string> {
  const out: Record<string, string> = {};
  const unfolded = block.replace(/\r\n[ \t]+/g, ' ');
  for (const line of unfolded.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return out;
}

export function parseDsn(raw: Buffer): ParsedDsn {
  const text = raw.toString('utf8');
  const headEnd = text.indexOf('\r\n\r\n');
  const head = text.slice(0, headEnd).replace(/\r\n[ \t]+/g, ' ');
  const ct = /^content-type:\s*(.*)$/im.exec(head)?.[1] ?? '';
  const boundary = /boundary="?([^";]+)"?/i.exec(ct)?.[1];
  const reportType = /report-type="?([^";\s]+)"?/i.exec(ct)?.[1] ?? '';
  if (!boundary) throw new Error(`not a multipart DSN: ${ct}`);
  const parts = text
    .slice(headEnd + 4)
    .split(`--${boundary}`)
    .slice(1, -1)
    .map((p) => p.replace(/^\r\n/, ''));
  const status = parts.find((p) =>
    /^content-type:\s*message\/delivery-status/im.test(p.slice(0, p.indexOf('\r\n\r\n'))),
  );
  if (!status) throw new Error('no message/delivery-status part');
  const body = status.slice(status.indexOf('\r\n\r\n') + 4).replace(/\r\n$/, '');
  const groups = body.split(/\r\n\r\n/).filter((g) => g.trim());
  const third = parts[2] ?? '';
  const thirdHead = third.slice(0, third.indexOf('\r\n\r\n'));
  return {
    reportType,
    message: fields(groups[0]),
    recipients: groups.slice(1).map(fields),
    original: third.slice(third.indexOf('\r\n\r\n') + 4),
    originalType: (/^content-type:\s*([^;\r\n]+)/im.exec(thirdHead)?.[1] ?? '').trim(),
  };
}
