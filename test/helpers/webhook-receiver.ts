/**
 * A webhook receiver for the delivery-event tests: a real HTTP server on 127.0.0.1:0 recording every
 * request (signature header and body). Its mode says how it answers: `up` 200, `down` 503, `hang` never
 * (the request stays open until the mode changes or the server closes).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { DeliveryEvent } from '../../relay/src/contract/events.js';

export type ReceiverMode = 'up' | 'down' | 'hang';

export interface WebhookRequest {
  signature: string;
  body: Buffer;
  status: number | 'hung';
}

export interface WebhookReceiver {
  readonly url: string;
  readonly requests: WebhookRequest[];
  /** Requests being held open (mode `hang`). */
  readonly hanging: number;
  setMode(m: ReceiverMode): void;
  /** Events of the requests answered 200, in arrival order (duplicates included). */
  accepted(): DeliveryEvent[];
  close(): Promise<void>;
}

const MAX_BODY = 16 * 1024 * 1024;

export async function startWebhookReceiver(mode: ReceiverMode = 'up'): Promise<WebhookReceiver> {
  const requests: WebhookRequest[] = [];
  const held = new Set<http.ServerResponse>();
  const answer = (res: http.ServerResponse, req: WebhookRequest) => {
    req.status = mode === 'up' ? 200 : 503;
    res.writeHead(req.status, { 'content-type': 'text/plain' }).end(mode === 'up' ? 'ok' : 'down');
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      const r: WebhookRequest = {
        signature: String(req.headers['cartero-signature'] ?? ''),
        body: Buffer.concat(chunks),
        status: 'hung',
      };
      requests.push(r);
      if (mode === 'hang') {
        held.add(res);
        res.on('close', () => held.delete(res));
        (res as http.ServerResponse & { rec?: WebhookRequest }).rec = r;
        return;
      }
      answer(res, r);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    requests,
    get hanging() {
      return held.size;
    },
    setMode(m) {
      mode = m;
      if (m !== 'hang')
        for (const res of [...held]) {
          held.delete(res);
          answer(res, (res as http.ServerResponse & { rec: WebhookRequest }).rec);
        }
    },
    accepted() {
      return requests
        .filter((r) => r.status === 200)
        .flatMap((r) => JSON.parse(r.body.toString('utf8')) as DeliveryEvent[]);
    },
    close() {
      for (const res of held) res.destroy();
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
