/**
 * The protobuf message tables protobuf.ts reads (and writes, for tests) by: the types, the scalar
 * shorthands, and the apimachinery messages every kind shares (ObjectMeta and what it holds, Time,
 * FieldsV1, DeleteOptions, the runtime.Unknown envelope). The kinds' own messages sit in their
 * descriptors under `kinds/`. Field numbers: see protobuf.ts's header.
 */

export type Scalar = 'string' | 'bytes' | 'bool' | 'int64';

export type FieldType =
  | { t: Scalar }
  | { t: 'message'; m: MessageSpec }
  | { t: 'map'; value: 'string' | 'bytes' }
  /** metav1.Time: message { seconds = 1; nanos = 2 } <-> RFC 3339 string, empty message <-> null. */
  | { t: 'time' }
  /** metav1.FieldsV1: message { Raw = 1 } holding JSON <-> the parsed JSON value. */
  | { t: 'fieldsV1' };

export interface FieldSpec {
  no: number;
  json: string;
  type: FieldType;
  repeated?: true;
  /** A Go non-pointer field tagged omitempty: a zero value ("" / 0 / false) is left out of the JSON. */
  omitEmpty?: true;
}

export interface MessageSpec {
  name: string;
  /** In the order the JSON API writes them. */
  fields: FieldSpec[];
}

export const STRING = { t: 'string' } as const;
export const BYTES = { t: 'bytes' } as const;
export const BOOL = { t: 'bool' } as const;
export const INT64 = { t: 'int64' } as const;
export const TIME = { t: 'time' } as const;
export const STRING_MAP = { t: 'map', value: 'string' } as const;
export const BYTES_MAP = { t: 'map', value: 'bytes' } as const;

/** A nested message type. */
export const message = (m: MessageSpec): FieldType => ({ t: 'message', m });

/** String fields, `[number, json name]` in JSON order. */
export function stringFields(fields: [number, string][], omitEmpty = false): FieldSpec[] {
  return fields.map(([no, json]) => ({ no, json, type: STRING, ...(omitEmpty ? { omitEmpty: true } : {}) }));
}

/** A message whose fields are all strings. */
export function stringsMessage(name: string, fields: [number, string][], omitEmpty = false): MessageSpec {
  return { name, fields: stringFields(fields, omitEmpty) };
}

const OWNER_REFERENCE: MessageSpec = {
  name: 'OwnerReference',
  fields: [
    ...stringFields([
      [5, 'apiVersion'],
      [1, 'kind'],
      [3, 'name'],
      [4, 'uid'],
    ]),
    { no: 6, json: 'controller', type: BOOL },
    { no: 7, json: 'blockOwnerDeletion', type: BOOL },
  ],
};

const MANAGED_FIELDS_ENTRY: MessageSpec = {
  name: 'ManagedFieldsEntry',
  fields: [
    { no: 1, json: 'manager', type: STRING, omitEmpty: true },
    { no: 2, json: 'operation', type: STRING, omitEmpty: true },
    { no: 3, json: 'apiVersion', type: STRING, omitEmpty: true },
    { no: 4, json: 'time', type: TIME },
    { no: 6, json: 'fieldsType', type: STRING, omitEmpty: true },
    { no: 7, json: 'fieldsV1', type: { t: 'fieldsV1' } },
    { no: 8, json: 'subresource', type: STRING, omitEmpty: true },
  ],
};

const OBJECT_META: MessageSpec = {
  name: 'ObjectMeta',
  fields: [
    ...stringFields(
      [
        [1, 'name'],
        [2, 'generateName'],
        [3, 'namespace'],
        [4, 'selfLink'],
        [5, 'uid'],
        [6, 'resourceVersion'],
      ],
      true,
    ),
    { no: 7, json: 'generation', type: INT64, omitEmpty: true },
    { no: 8, json: 'creationTimestamp', type: TIME },
    { no: 9, json: 'deletionTimestamp', type: TIME },
    { no: 10, json: 'deletionGracePeriodSeconds', type: INT64 },
    { no: 11, json: 'labels', type: STRING_MAP },
    { no: 12, json: 'annotations', type: STRING_MAP },
    { no: 13, json: 'ownerReferences', type: message(OWNER_REFERENCE), repeated: true },
    { no: 14, json: 'finalizers', type: STRING, repeated: true },
    { no: 17, json: 'managedFields', type: message(MANAGED_FIELDS_ENTRY), repeated: true },
  ],
};

/** `metadata = 1`, the first field of every kind. */
export const METADATA: FieldSpec = { no: 1, json: 'metadata', type: message(OBJECT_META) };

export const DELETE_OPTIONS: MessageSpec = {
  name: 'DeleteOptions',
  fields: [
    { no: 1, json: 'gracePeriodSeconds', type: INT64 },
    {
      no: 2,
      json: 'preconditions',
      type: message(
        stringsMessage('Preconditions', [
          [1, 'uid'],
          [2, 'resourceVersion'],
        ]),
      ),
    },
    { no: 3, json: 'orphanDependents', type: BOOL },
    { no: 4, json: 'propagationPolicy', type: STRING },
    { no: 5, json: 'dryRun', type: STRING, repeated: true },
  ],
};

export const UNKNOWN: MessageSpec = {
  name: 'runtime.Unknown',
  fields: [
    {
      no: 1,
      json: 'typeMeta',
      type: message(
        stringsMessage('runtime.TypeMeta', [
          [1, 'apiVersion'],
          [2, 'kind'],
        ]),
      ),
    },
    { no: 2, json: 'raw', type: BYTES },
    { no: 3, json: 'contentEncoding', type: STRING },
    { no: 4, json: 'contentType', type: STRING },
  ],
};

export const TIMESTAMP: MessageSpec = {
  name: 'Time',
  fields: [
    { no: 1, json: 'seconds', type: INT64 },
    { no: 2, json: 'nanos', type: INT64 }, // int32 on the wire: a varint all the same
  ],
};

export const FIELDS_V1: MessageSpec = { name: 'FieldsV1', fields: [{ no: 1, json: 'Raw', type: BYTES }] };

const MAP_ENTRY = (value: 'string' | 'bytes'): MessageSpec => ({
  name: 'map entry',
  fields: [
    { no: 1, json: 'key', type: STRING },
    { no: 2, json: 'value', type: value === 'string' ? STRING : BYTES },
  ],
});
export const STRING_ENTRY = MAP_ENTRY('string');
export const BYTES_ENTRY = MAP_ENTRY('bytes');
