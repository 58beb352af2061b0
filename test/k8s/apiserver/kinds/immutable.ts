/** The `immutable` flag of ConfigMaps and Secrets. */
import type { StatusCause } from '../errors.js';
import { deepEqual, type KObject } from '../objects.js';

/** Once `immutable` is set, neither the flag nor the data may change. */
export function immutableDataCauses(obj: KObject, old: KObject): StatusCause[] {
  if (old.immutable !== true) return [];
  const same =
    obj.immutable === true && deepEqual(obj.data, old.data) && deepEqual(obj.binaryData, old.binaryData);
  return same
    ? []
    : [
        {
          reason: 'FieldValueForbidden',
          message: 'Forbidden: field is immutable when `immutable` is set',
          field: 'data',
        },
      ];
}
