/** The Message-ID of a message from its header section (for delivery events): pure, bounded. */

const MAX_ID = 998;

/** The first Message-ID field's value (unfolded, trimmed, at most 998 characters), or undefined. */
export function messageIdOf(head: Buffer): string | undefined {
  const text = head.toString('latin1');
  const m = /(?:^|\r?\n)message-id[ \t]*:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)/i.exec(text);
  if (!m) return undefined;
  const v = m[1].replace(/\r?\n[ \t]/g, ' ').trim();
  return v ? v.slice(0, MAX_ID) : undefined;
}
