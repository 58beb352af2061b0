/**
 * smtp-server (3.21) waits a fixed 100 ms before the greeting, with no option to change it. With one
 * message per connection that caps a relay at connections ÷ 0.1 s. We make the pause a per-server option
 * (`greetingDelayMs`, default 100 as upstream) by replacing `SMTPConnection.prototype.init` with an
 * equivalent that reads it. The replacement is applied only when the upstream method is the one we know,
 * so an upgrade that changes it keeps upstream behaviour and logs a warning. See docs/adr/002-greeting-delay.md.
 */
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

type Conn = {
  _server: { options: { maxClients?: number; greetingDelayMs?: number }; connections: Set<unknown> };
  name: string;
  _setListeners(cb: () => void): void;
  send(code: number, text: string, ctx?: unknown): void;
  connectionReady(): void;
};

let state: 'unpatched' | 'patched' | 'unknown-upstream' = 'unpatched';

export function installGreetingDelayOption(): typeof state {
  if (state !== 'unpatched') return state;
  const proto = (SMTPConnection as unknown as { prototype: { init: () => void } }).prototype;
  const src = proto.init.toString();
  if (!src.includes('this.connectionReady(), 100') || !src.includes('maxClients')) {
    state = 'unknown-upstream';
    return state;
  }
  proto.init = function (this: Conn) {
    this._setListeners(() => {
      const o = this._server.options;
      if (o.maxClients && this._server.connections.size > o.maxClients) {
        return this.send(421, this.name + ' Too many connected clients, try again in a moment', false);
      }
      const delay = o.greetingDelayMs ?? 100;
      if (delay <= 0) return this.connectionReady();
      setTimeout(() => this.connectionReady(), delay).unref();
    });
  };
  state = 'patched';
  return state;
}
