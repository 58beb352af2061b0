/**
 * `npm run standalone`: the relay alone, without Kubernetes. Runs a capture MX on 127.0.0.1:2626 (it keeps every message it
 * receives under .tmp/standalone/captured/) and the relay with examples/standalone/relay.yaml, then prints
 * how to send mail through it. Ctrl-C stops both. `npm start` runs the Kubernetes playground instead.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startCaptureMx } from './capture-mx.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const config = path.join(repo, 'examples/standalone/relay.yaml');
const root = path.join(repo, '.tmp/standalone');
const captured = path.join(root, 'captured');
mkdirSync(path.join(root, 'secrets'), { recursive: true });
mkdirSync(captured, { recursive: true });
const pwFile = path.join(root, 'secrets/app.password');
if (!existsSync(pwFile)) writeFileSync(pwFile, randomBytes(12).toString('base64url') + '\n', { mode: 0o600 });
const password = (await import('node:fs')).readFileSync(pwFile, 'utf8').trim();

const mx = await startCaptureMx({
  host: '127.0.0.1',
  port: 2626,
  dir: captured,
  relativeTo: repo,
  onMessage: (line) => process.stdout.write(line + '\n'),
});

const relay = spawn(process.execPath, [path.join(repo, 'dist/relay/src/main.js'), '--config', config], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
let shown = false;
relay.stdout.setEncoding('utf8');
let buf = '';
relay.stdout.on('data', (chunk: string) => {
  buf += chunk;
  let i;
  while ((i = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    let ev: Record<string, unknown>;
    try {
      ev = JSON.parse(line) as Record<string, unknown>;
    } catch {
      process.stdout.write(line + '\n');
      continue;
    }
    if (ev.event === 'ready' && !shown) {
      shown = true;
      process.stdout.write(`
Cartero relay is running (config: examples/standalone/relay.yaml, spool: .tmp/standalone/spool).

  Send a message (trusted network, no AUTH):
    swaks --server 127.0.0.1 --port 2525 --from you@example.test --to someone@example.test
  Send with AUTH on the submission listener:
    swaks --server 127.0.0.1 --port 5870 --auth PLAIN --auth-user app --auth-password '${password}' \\
          --from you@example.test --to someone@example.test
  Mail to example.test and *.example.test goes to the capture MX (files in .tmp/standalone/captured/);
  other domains are looked up in DNS and delivered to their MX hosts.

  Metrics:  curl http://127.0.0.1:9025/metrics
  Queue:    curl http://127.0.0.1:9025/queue
  Ctrl-C stops everything.
`);
    } else if (
      typeof ev.event === 'string' &&
      [
        'received',
        'delivered',
        'deferred',
        'bounced',
        'expired',
        'dsn.queued',
        'relay.denied',
        'auth.failed',
      ].includes(ev.event)
    ) {
      process.stdout.write(
        `relay: ${ev.event} ${ev.queueId ?? ''} ${ev.to ?? ev.from ?? ''} ${ev.reply ?? ''}\n`,
      );
    } else if (ev.level === 'error' || ev.level === 'fatal' || ev.level === 'warn') {
      process.stdout.write(`relay ${String(ev.level)}: ${String(ev.msg)} ${ev.err ? String(ev.err) : ''}\n`);
    }
  }
});

let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  process.stdout.write('\nstopping...\n');
  relay.kill('SIGTERM');
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
relay.on('exit', (code, signal) => {
  mx.close(() => process.exit(stopping ? 0 : (code ?? (signal ? 1 : 0))));
});
