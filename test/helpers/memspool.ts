/**
 * An in-memory SpoolStore for engine tests: the same contract as the disk spool (checked body length,
 * readHead, moveAside), no disk. `damage(id, bytes)` changes a stored body behind the engine's back.
 */
import { Readable } from 'node:stream';
import {
  MAX_BUFFERED_BODY,
  SpoolCorruptError,
  entryOf,
  initialState,
  type DeliveryState,
  type Envelope,
  type Quarantined,
  type QueuedEntry,
  type SpooledMessage,
  type SpoolStore,
} from '../../relay/src/spool/types.js';

interface Stored {
  env: Envelope;
  body: Buffer;
  state?: DeliveryState;
}

export class MemSpool implements SpoolStore {
  readonly messages = new Map<string, Stored>();
  readonly aside = new Map<string, { stored: Stored; reason: string }>();
  /** Every saveState and remove, in order (for assertions). */
  readonly ops: string[] = [];
  private bytes = 0;

  get size(): number {
    return this.messages.size;
  }
  get sizeBytes(): number {
    return this.bytes;
  }

  /** Stores a message as a client's would be (for tests that start with a queue). */
  put(env: Envelope, body: Buffer, state?: DeliveryState): SpooledMessage {
    this.messages.set(env.id, { env, body, state });
    this.bytes += env.size;
    return { env, state: state ?? initialState(env, env.arrivedAt), bodyOffset: 0 };
  }

  /** Replaces a stored body (a disk that lost or changed bytes). */
  damage(id: string, body: Buffer): void {
    this.messages.get(id)!.body = body;
  }

  async *scan(): AsyncIterable<QueuedEntry[]> {
    for (const id of [...this.messages.keys()]) {
      const m = this.messages.get(id);
      if (m)
        yield [
          entryOf({ env: m.env, state: m.state ?? initialState(m.env, m.env.arrivedAt), bodyOffset: 0 }),
        ];
    }
  }

  async load(id: string): Promise<SpooledMessage> {
    const m = this.messages.get(id);
    if (!m) throw Object.assign(new Error(`no message ${id}`), { code: 'ENOENT' });
    return {
      env: m.env,
      state: structuredClone(m.state ?? initialState(m.env, m.env.arrivedAt)),
      bodyOffset: 0,
    };
  }

  private checked(msg: SpooledMessage): Buffer {
    const m = this.messages.get(msg.env.id);
    if (!m) throw Object.assign(new Error(`no message ${msg.env.id}`), { code: 'ENOENT' });
    if (m.body.length !== msg.env.size)
      throw new SpoolCorruptError(
        msg.env.id,
        `body is ${m.body.length} bytes, the envelope says ${msg.env.size}`,
      );
    return m.body;
  }

  async readBody(msg: SpooledMessage): Promise<Buffer | Readable> {
    const b = this.checked(msg);
    return b.length > MAX_BUFFERED_BODY ? Readable.from([b.subarray(0, 65536), b.subarray(65536)]) : b;
  }

  async readHead(msg: SpooledMessage, maxBytes: number): Promise<Buffer> {
    return this.checked(msg).subarray(0, maxBytes);
  }

  async write(env: Envelope, raw: Buffer[]): Promise<number> {
    this.put(env, Buffer.concat(raw));
    return 0;
  }

  async saveState(id: string, state: DeliveryState): Promise<void> {
    const m = this.messages.get(id);
    if (m) m.state = structuredClone(state);
    this.ops.push(`save ${id}`);
  }

  async remove(id: string, size: number): Promise<void> {
    if (this.messages.delete(id)) this.bytes -= size;
    this.ops.push(`remove ${id}`);
  }

  async moveAside(id: string, size: number, reason: string): Promise<Quarantined> {
    const m = this.messages.get(id);
    if (m) {
      this.aside.set(id, { stored: m, reason });
      this.messages.delete(id);
      this.bytes -= size;
    }
    return { file: `${id}.msg`, reason, movedTo: `corrupt/${id}.msg` };
  }
}
