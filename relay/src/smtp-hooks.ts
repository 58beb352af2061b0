/**
 * Hooks into smtp-server (3.21) that its options do not offer, installed by replacing two methods of
 * `SMTPConnection.prototype` with equivalents. Each replacement is applied only when the upstream method
 * is the one we know, so an upgrade that changes it keeps upstream behaviour and logs a warning.
 *
 * - `init`: upstream waits a fixed 100 ms before the greeting (a cap of connections ÷ 0.1 s with one
 *   message per connection); the pause becomes the per-server option `greetingDelayMs` (ADR 002). Its
 *   listener-wide `maxClients` check becomes `admitConnection(remoteAddress, open)` when given (trusted
 *   clients keep a reserve of slots), and `onConnectionInit(conn)` sees every new connection.
 * - `_onCommand`: `onCommandLine(conn)` is told of every complete command line (for command deadlines).
 */
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

/** The parts of smtp-server's connection the relay reads (see `connectionProgress` in inbound.ts). */
export type HookedConnection = {
  _server: { options: HookOptions; connections: Set<unknown> };
  name: string;
  remoteAddress: string;
  session: unknown;
  _socket: { bytesRead: number; destroyed: boolean };
  _parser?: false | { _dataMode?: boolean };
  _dataStream?: unknown;
  _handlerPending?: boolean;
  _closing?: boolean;
  _setListeners(cb: () => void): void;
  send(code: number, text: string, ctx?: unknown): void;
  connectionReady(): void;
};

export interface HookOptions {
  maxClients?: number;
  greetingDelayMs?: number;
  admitConnection?: (remoteAddress: string, open: number) => boolean;
  onConnectionInit?: (conn: HookedConnection) => void;
  onCommandLine?: (conn: HookedConnection) => void;
}

type Proto = {
  init: (this: HookedConnection) => void;
  _onCommand: (this: HookedConnection, command: Buffer, cb?: () => void) => unknown;
};

export type HookState = { init: boolean; command: boolean };
let installed: HookState | undefined;

/** Installs the hooks once; says which ones are active (the others keep upstream behaviour). */
export function installSmtpHooks(): HookState {
  if (installed) return installed;
  const proto = (SMTPConnection as unknown as { prototype: Proto }).prototype;
  installed = { init: false, command: false };
  const initSrc = proto.init.toString();
  if (initSrc.includes('this.connectionReady(), 100') && initSrc.includes('maxClients')) {
    proto.init = function (this: HookedConnection) {
      this._setListeners(() => {
        const o = this._server.options;
        const open = this._server.connections.size;
        const admitted = o.admitConnection
          ? o.admitConnection(this.remoteAddress, open)
          : !(o.maxClients && open > o.maxClients);
        if (!admitted) {
          return this.send(421, this.name + ' Too many connected clients, try again in a moment', false);
        }
        o.onConnectionInit?.(this);
        const delay = o.greetingDelayMs ?? 100;
        if (delay <= 0) return this.connectionReady();
        setTimeout(() => this.connectionReady(), delay).unref();
      });
    };
    installed.init = true;
  }
  const onCommand = proto._onCommand;
  if (typeof onCommand === 'function' && onCommand.length === 2) {
    proto._onCommand = function (this: HookedConnection, command: Buffer, cb?: () => void) {
      this._server.options.onCommandLine?.(this);
      return onCommand.call(this, command, cb);
    };
    installed.command = true;
  }
  return installed;
}
