/**
 * A minimal reader (and a test-only writer) for the Kubernetes protobuf wire format, enough for the test
 * API server to accept what Helm and client-go send as `application/vnd.kubernetes.protobuf`: the kinds
 * whose descriptor (kinds/) has a `protobuf` message (Namespace, ConfigMap, Secret, ServiceAccount,
 * TokenRequest), and DeleteOptions. The message tables are in protobuf-messages.ts and the descriptors.
 * Pure: no I/O, no dependencies.
 *
 * The envelope (k8s.io/apimachinery/pkg/runtime/serializer/protobuf/protobuf.go): the 4 bytes
 * `0x6b 0x38 0x73 0x00` ("k8s\0"), then a proto2 `runtime.Unknown` message whose `raw` holds the object.
 *
 * Field numbers, checked against the upstream generated .proto files (proto2, go-to-protobuf output):
 *   - kubernetes/api core/v1/generated.proto (commit 35f2b3a24dcfdb74ee45e2ddc8d44d6cc9732aa6):
 *       Secret { metadata = 1; data = 2 (map<string, bytes>); type = 3; stringData = 4 (map<string, string>);
 *                immutable = 5 }
 *       ConfigMap { metadata = 1; data = 2 (map<string, string>); binaryData = 3 (map<string, bytes>);
 *                   immutable = 4 }
 *   - kubernetes/apimachinery v0.26.0 (mirror spotmaxtech/k8s-apimachinery-v0260, commit
 *     64429bdd60707e12b7891fc754b604f1bc72832b):
 *       pkg/runtime/generated.proto:
 *         Unknown { typeMeta = 1; raw = 2; contentEncoding = 3; contentType = 4 }
 *         TypeMeta { apiVersion = 1; kind = 2 }   (runtime.TypeMeta; meta/v1 TypeMeta is kind = 1, apiVersion = 2)
 *       pkg/apis/meta/v1/generated.proto:
 *         ObjectMeta { name = 1; generateName = 2; namespace = 3; selfLink = 4; uid = 5; resourceVersion = 6;
 *                      generation = 7; creationTimestamp = 8; deletionTimestamp = 9;
 *                      deletionGracePeriodSeconds = 10; labels = 11; annotations = 12; ownerReferences = 13;
 *                      finalizers = 14; managedFields = 17 }
 *         OwnerReference { kind = 1; name = 3; uid = 4; apiVersion = 5; controller = 6; blockOwnerDeletion = 7 }
 *         ManagedFieldsEntry { manager = 1; operation = 2; apiVersion = 3; time = 4; fieldsType = 6;
 *                              fieldsV1 = 7; subresource = 8 }
 *         FieldsV1 { Raw = 1 }   (bytes holding JSON)
 *         Time { seconds = 1; nanos = 2 }
 *         DeleteOptions { gracePeriodSeconds = 1; preconditions = 2; orphanDependents = 3;
 *                         propagationPolicy = 4; dryRun = 5 (repeated) }
 *         Preconditions { uid = 1; resourceVersion = 2 }
 *       pkg/runtime/serializer/protobuf/protobuf.go: protoEncodingPrefix = {0x6b, 0x38, 0x73, 0x00}
 *   Maps are encoded as repeated entry messages { key = 1; value = 2 } (protobuf spec).
 *
 * The decoded objects follow the JSON the JSON API carries: Go `omitempty` strings that arrive empty
 * (go-to-protobuf writes every non-pointer field, empty or not) are dropped; pointer fields keep their
 * value even when it is empty/zero; bytes become base64; Time becomes RFC 3339 at whole seconds (as
 * metav1.Time does), an empty Time becomes null.
 */

import { DESCRIPTORS } from './kinds/index.js';
import { apiVersionOf } from './resources.js';
import {
  BYTES_ENTRY,
  DELETE_OPTIONS,
  FIELDS_V1,
  STRING_ENTRY,
  TIMESTAMP,
  UNKNOWN,
  type FieldSpec,
  type MessageSpec,
  type Scalar,
} from './protobuf-messages.js';

/** The four bytes in front of every protobuf body: "k8s" and encoding style 0 (runtime.Unknown). */
export const K8S_PROTOBUF_MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);

export const K8S_PROTOBUF_CONTENT_TYPE = 'application/vnd.kubernetes.protobuf';

/** A malformed body: wrong magic, truncated, bad wire types. The server answers 400. */
export class K8sProtobufDecodeError extends Error {
  constructor(message: string) {
    super(`protobuf body: ${message}`);
    this.name = 'K8sProtobufDecodeError';
  }
}

/** A well-formed envelope around a kind this reader does not know. The server answers 415. */
export class K8sProtobufUnsupportedKindError extends Error {
  constructor(
    readonly apiVersion: string,
    readonly kind: string,
  ) {
    super(
      `protobuf body: unsupported kind ${JSON.stringify(kind)} (apiVersion ${JSON.stringify(apiVersion)}); ` +
        `only ${protobufKinds()} and DeleteOptions can be sent as protobuf, send JSON instead`,
    );
    this.name = 'K8sProtobufUnsupportedKindError';
  }
}

/** True for `application/vnd.kubernetes.protobuf`, any case, with or without parameters. */
export function isK8sProtobuf(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  const mediaType = contentType.split(';', 1)[0].trim().toLowerCase();
  return mediaType === K8S_PROTOBUF_CONTENT_TYPE;
}

// ---------------------------------------------------------------------------------------------------
// Which message a body holds: DeleteOptions (registered in every group version, metav1.AddToGroupVersion)
// or a kind whose descriptor (kinds/) has a protobuf message.

function specFor(apiVersion: string, kind: string): MessageSpec | undefined {
  if (kind === 'DeleteOptions') return DELETE_OPTIONS;
  return DESCRIPTORS.find(
    (d) => d.protobuf && d.kind === kind && apiVersionOf(d.group, d.version) === apiVersion,
  )?.protobuf;
}

/** `v1 Secret, v1 ConfigMap, ...`: the kinds specFor knows besides DeleteOptions. */
function protobufKinds(): string {
  return DESCRIPTORS.filter((d) => d.protobuf)
    .map((d) => `${apiVersionOf(d.group, d.version)} ${d.kind}`)
    .join(', ');
}

// ---------------------------------------------------------------------------------------------------
// Reader

const WT_VARINT = 0;
const WT_I64 = 1;
const WT_LEN = 2;
const WT_I32 = 5;

type WireValue = bigint | Buffer;

interface WireField {
  no: number;
  wt: number;
  value: WireValue;
}

/** Splits one message into its fields; throws on truncation or wire types proto3/proto2 do not allow here. */
function readFields(buf: Buffer, where: string): WireField[] {
  const fields: WireField[] = [];
  let pos = 0;

  const varint = (): bigint => {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (pos >= buf.length)
        throw new K8sProtobufDecodeError(`${where}: truncated (varint runs past the end)`);
      const b = buf[pos++];
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return BigInt.asUintN(64, result);
    }
    throw new K8sProtobufDecodeError(`${where}: varint longer than 10 bytes at offset ${pos}`);
  };
  const take = (n: number, what: string): Buffer => {
    if (n > buf.length - pos) {
      throw new K8sProtobufDecodeError(
        `${where}: truncated (${what} needs ${n} bytes at offset ${pos}, ${buf.length - pos} left)`,
      );
    }
    const out = buf.subarray(pos, pos + n);
    pos += n;
    return out;
  };

  while (pos < buf.length) {
    const start = pos;
    const key = varint();
    const no = Number(key >> 3n);
    const wt = Number(key & 7n);
    if (no === 0 || key >> 3n > 0x1fffffffn) {
      throw new K8sProtobufDecodeError(`${where}: invalid field number ${key >> 3n} at offset ${start}`);
    }
    let value: WireValue;
    switch (wt) {
      case WT_VARINT:
        value = varint();
        break;
      case WT_I64:
        value = take(8, `field ${no} (fixed64)`);
        break;
      case WT_I32:
        value = take(4, `field ${no} (fixed32)`);
        break;
      case WT_LEN: {
        const len = varint();
        if (len > BigInt(buf.length - pos)) {
          throw new K8sProtobufDecodeError(
            `${where}: truncated (field ${no} declares ${len} bytes at offset ${pos}, ${buf.length - pos} left)`,
          );
        }
        value = take(Number(len), `field ${no}`);
        break;
      }
      default:
        throw new K8sProtobufDecodeError(
          `${where}: unsupported wire type ${wt} for field ${no} at offset ${start}`,
        );
    }
    fields.push({ no, wt, value });
  }
  return fields;
}

function expectWire(f: WireField, wt: number, where: string, spec: FieldSpec): void {
  if (f.wt !== wt) {
    throw new K8sProtobufDecodeError(
      `${where}.${spec.json} (field ${f.no}): wire type ${f.wt}, expected ${wt}`,
    );
  }
}

function decodeTime(buf: Buffer, where: string): string | null {
  const t = decodeMessage(buf, TIMESTAMP, where);
  if (t.seconds === undefined && t.nanos === undefined) return null; // metav1.Time.Unmarshal: empty -> zero time
  const seconds = (t.seconds as number | undefined) ?? 0;
  // metav1.Time keeps whole seconds only (its Unmarshal drops nanos) and marshals RFC 3339 in UTC.
  const ms = seconds * 1000;
  if (!Number.isFinite(ms) || Math.abs(ms) > 8.64e15) {
    throw new K8sProtobufDecodeError(`${where}: timestamp ${seconds}s out of range`);
  }
  if (seconds === -62135596800) return null; // Go's zero time, should a writer send it explicitly
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function decodeScalar(f: WireField, spec: FieldSpec, t: Scalar, where: string): unknown {
  switch (t) {
    case 'string':
      expectWire(f, WT_LEN, where, spec);
      return (f.value as Buffer).toString('utf8');
    case 'bytes':
      expectWire(f, WT_LEN, where, spec);
      return Buffer.from(f.value as Buffer);
    case 'bool':
      expectWire(f, WT_VARINT, where, spec);
      return (f.value as bigint) !== 0n;
    case 'int64': {
      expectWire(f, WT_VARINT, where, spec);
      const n = BigInt.asIntN(64, f.value as bigint);
      if (n > BigInt(Number.MAX_SAFE_INTEGER) || n < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw new K8sProtobufDecodeError(`${where}.${spec.json}: ${n} does not fit a JSON number exactly`);
      }
      return Number(n);
    }
  }
}

function decodeMap(buf: Buffer, valueType: 'string' | 'bytes', into: Record<string, unknown>, where: string) {
  const entry = decodeMessage(buf, valueType === 'string' ? STRING_ENTRY : BYTES_ENTRY, where);
  const key = (entry.key as string | undefined) ?? '';
  if (valueType === 'string') into[key] = (entry.value as string | undefined) ?? '';
  else into[key] = ((entry.value as Buffer | undefined) ?? Buffer.alloc(0)).toString('base64');
}

function isEmpty(v: unknown): boolean {
  return v === '' || v === 0 || v === false;
}

/** Decodes one message by its table. Unknown field numbers are skipped, as protobuf readers do. */
function decodeMessage(buf: Buffer, spec: MessageSpec, where: string): Record<string, unknown> {
  const byNo = new Map(spec.fields.map((f) => [f.no, f]));
  const values = new Map<FieldSpec, unknown>();
  for (const f of readFields(buf, where)) {
    const fs = byNo.get(f.no);
    if (fs === undefined) continue;
    const here = `${where}.${fs.json}`;
    const type = fs.type;
    if (type.t === 'map') {
      expectWire(f, WT_LEN, where, fs);
      const obj = (values.get(fs) as Record<string, unknown> | undefined) ?? {};
      decodeMap(f.value as Buffer, type.value, obj, here);
      values.set(fs, obj);
      continue;
    }
    let v: unknown;
    if (type.t === 'message') {
      expectWire(f, WT_LEN, where, fs);
      v = decodeMessage(f.value as Buffer, type.m, here);
    } else if (type.t === 'time') {
      expectWire(f, WT_LEN, where, fs);
      v = decodeTime(f.value as Buffer, here);
    } else if (type.t === 'fieldsV1') {
      expectWire(f, WT_LEN, where, fs);
      const raw = decodeMessage(f.value as Buffer, FIELDS_V1, here).Raw as Buffer | undefined;
      try {
        v = raw === undefined || raw.length === 0 ? {} : JSON.parse(raw.toString('utf8'));
      } catch {
        throw new K8sProtobufDecodeError(`${here}: Raw is not JSON`);
      }
    } else {
      v = decodeScalar(f, fs, type.t, where);
    }
    if (fs.repeated) {
      const list = (values.get(fs) as unknown[] | undefined) ?? [];
      list.push(v);
      values.set(fs, list);
    } else {
      values.set(fs, v); // proto: the last occurrence wins
    }
  }
  const out: Record<string, unknown> = {};
  for (const fs of spec.fields) {
    if (!values.has(fs)) continue;
    const v = values.get(fs);
    if (fs.omitEmpty && isEmpty(v)) continue;
    out[fs.json] = v;
  }
  return out;
}

/**
 * Decodes a `application/vnd.kubernetes.protobuf` request body into the object the JSON API would carry.
 * Throws K8sProtobufDecodeError for a malformed body and K8sProtobufUnsupportedKindError for a kind other
 * than v1 Secret, v1 ConfigMap or DeleteOptions.
 */
export function decodeK8sProtobuf(body: Buffer): Record<string, unknown> {
  if (body.length < K8S_PROTOBUF_MAGIC.length || !body.subarray(0, 4).equals(K8S_PROTOBUF_MAGIC)) {
    const head = body.subarray(0, 4).toString('hex') || '(empty)';
    throw new K8sProtobufDecodeError(`does not start with the magic "k8s\\0" (6b387300), got ${head}`);
  }
  if (body.length === K8S_PROTOBUF_MAGIC.length)
    throw new K8sProtobufDecodeError('empty body after the magic');
  const unknown = decodeMessage(body.subarray(4), UNKNOWN, 'Unknown');
  const typeMeta = (unknown.typeMeta as Record<string, unknown> | undefined) ?? {};
  const apiVersion = (typeMeta.apiVersion as string | undefined) ?? '';
  const kind = (typeMeta.kind as string | undefined) ?? '';
  if (kind === '') throw new K8sProtobufDecodeError('Unknown.typeMeta has no kind');
  if (apiVersion === '')
    throw new K8sProtobufDecodeError(`Unknown.typeMeta has no apiVersion (kind ${kind})`);
  const contentEncoding = (unknown.contentEncoding as string | undefined) ?? '';
  if (contentEncoding !== '') {
    throw new K8sProtobufDecodeError(
      `unsupported Unknown.contentEncoding ${JSON.stringify(contentEncoding)}`,
    );
  }
  const contentType = (unknown.contentType as string | undefined) ?? '';
  if (contentType !== '' && !isK8sProtobuf(contentType)) {
    throw new K8sProtobufDecodeError(`unsupported Unknown.contentType ${JSON.stringify(contentType)}`);
  }
  const spec = specFor(apiVersion, kind);
  if (spec === undefined) throw new K8sProtobufUnsupportedKindError(apiVersion, kind);
  const raw = (unknown.raw as Buffer | undefined) ?? Buffer.alloc(0);
  const obj = toJson(decodeMessage(raw, spec, kind));
  return { apiVersion, kind, ...obj };
}

/** Turns the Buffers the reader produced for `bytes` fields into base64, as JSON carries them. */
function toJson(obj: Record<string, unknown>): Record<string, unknown> {
  const walk = (v: unknown): unknown => {
    if (Buffer.isBuffer(v)) return v.toString('base64');
    if (Array.isArray(v)) return v.map(walk);
    return v;
  };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) out[k] = walk(v);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Writer (tests only)

function varintBytes(n: bigint): Buffer {
  let v = BigInt.asUintN(64, n);
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Buffer.from(out);
}

function keyBytes(no: number, wt: number): Buffer {
  return varintBytes((BigInt(no) << 3n) | BigInt(wt));
}

function lenField(no: number, payload: Buffer): Buffer {
  return Buffer.concat([keyBytes(no, WT_LEN), varintBytes(BigInt(payload.length)), payload]);
}

function fail(where: string, message: string): never {
  throw new TypeError(`encodeK8sProtobufForTest: ${where}: ${message}`);
}

function encodeTime(v: unknown, where: string): Buffer {
  if (v === null) return Buffer.alloc(0); // metav1.Time.Marshal: zero time -> no bytes
  if (typeof v !== 'string') fail(where, 'expected an RFC 3339 string or null');
  const ms = Date.parse(v);
  if (Number.isNaN(ms)) fail(where, `not a timestamp: ${v}`);
  return Buffer.concat([keyBytes(1, WT_VARINT), varintBytes(BigInt(Math.floor(ms / 1000)))]);
}

function encodeValue(fs: FieldSpec, v: unknown, where: string): Buffer {
  const type = fs.type;
  switch (type.t) {
    case 'string':
      if (typeof v !== 'string') fail(where, 'expected a string');
      return lenField(fs.no, Buffer.from(v, 'utf8'));
    case 'bytes':
      if (Buffer.isBuffer(v)) return lenField(fs.no, v);
      if (typeof v !== 'string') fail(where, 'expected a base64 string');
      return lenField(fs.no, Buffer.from(v, 'base64'));
    case 'bool':
      if (typeof v !== 'boolean') fail(where, 'expected a boolean');
      return Buffer.concat([keyBytes(fs.no, WT_VARINT), varintBytes(v ? 1n : 0n)]);
    case 'int64':
      if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(where, 'expected an integer');
      return Buffer.concat([keyBytes(fs.no, WT_VARINT), varintBytes(BigInt(v))]);
    case 'message':
      return lenField(fs.no, encodeMessage(v, type.m, where));
    case 'time':
      return lenField(fs.no, encodeTime(v, where));
    case 'fieldsV1':
      return lenField(
        fs.no,
        encodeMessage({ Raw: Buffer.from(JSON.stringify(v), 'utf8') }, FIELDS_V1, where),
      );
    case 'map': {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(where, 'expected an object');
      const entries = Object.entries(v as Record<string, unknown>).sort(([a], [b]) =>
        a < b ? -1 : a > b ? 1 : 0,
      );
      const entrySpec = type.value === 'string' ? STRING_ENTRY : BYTES_ENTRY;
      return Buffer.concat(
        entries.map(([key, value]) =>
          lenField(fs.no, encodeMessage({ key, value }, entrySpec, `${where}.${key}`)),
        ),
      );
    }
  }
}

function encodeMessage(obj: unknown, spec: MessageSpec, where: string): Buffer {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
    fail(where, `expected a ${spec.name} object`);
  const record = obj as Record<string, unknown>;
  const known = new Set(spec.fields.map((f) => f.json));
  for (const k of Object.keys(record)) {
    if (!known.has(k)) fail(where, `${spec.name} has no protobuf field for ${JSON.stringify(k)}`);
  }
  // Written in field-number order, as Go marshals.
  const parts: Buffer[] = [];
  for (const fs of [...spec.fields].sort((a, b) => a.no - b.no)) {
    const v = record[fs.json];
    if (v === undefined) continue;
    const here = `${where}.${fs.json}`;
    if (fs.repeated) {
      if (!Array.isArray(v)) fail(here, 'expected an array');
      v.forEach((item, i) => parts.push(encodeValue(fs, item, `${here}[${i}]`)));
    } else {
      parts.push(encodeValue(fs, v, here));
    }
  }
  return Buffer.concat(parts);
}

/**
 * Encodes a Secret, ConfigMap or DeleteOptions (JSON form, with apiVersion and kind) the way client-go
 * does: magic, then runtime.Unknown { typeMeta, raw, contentEncoding "", contentType "" }. For tests only.
 */
export function encodeK8sProtobufForTest(obj: Record<string, unknown>): Buffer {
  const { apiVersion, kind, ...rest } = obj;
  if (typeof apiVersion !== 'string' || typeof kind !== 'string')
    fail('object', 'apiVersion and kind are required');
  const spec = specFor(apiVersion, kind);
  if (spec === undefined) fail('object', `no protobuf table for ${apiVersion} ${kind}`);
  const raw = encodeMessage(rest, spec, kind);
  const unknown = encodeMessage(
    { typeMeta: { apiVersion, kind }, raw, contentEncoding: '', contentType: '' },
    UNKNOWN,
    'Unknown',
  );
  return Buffer.concat([K8S_PROTOBUF_MAGIC, unknown]);
}
