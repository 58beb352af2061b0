/** The playgrounds' capture MX: accepts every message and writes it to `<dir>/<time>-<n>.eml`. */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { SMTPServer } from 'smtp-server';

export async function startCaptureMx(opts: {
  host: string;
  port: number;
  dir: string;
  /** Called with a one-line description of each message. */
  onMessage: (line: string) => void;
  /** Paths in the description are relative to this folder. */
  relativeTo: string;
}): Promise<SMTPServer> {
  let n = 0;
  const mx = new SMTPServer({
    name: 'capture.localhost',
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    hideDSN: false,
    logger: false,
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const file = path.join(opts.dir, `${Date.now()}-${++n}.eml`);
        writeFileSync(file, Buffer.concat(chunks));
        const to = session.envelope.rcptTo.map((r) => r.address).join(', ');
        const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
        opts.onMessage(
          `capture MX: <${from}> -> ${to} from ${session.remoteAddress} -> ${path.relative(opts.relativeTo, file)}`,
        );
        cb(null, 'captured');
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    mx.once('error', reject);
    mx.listen(opts.port, opts.host, resolve);
  });
  return mx;
}
