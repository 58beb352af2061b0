/**
 * Pure patch machinery for the test Kubernetes API server: JSON merge patch (RFC 7386), JSON patch
 * (RFC 6902), strategic merge patch and server-side apply with managedFields (FieldsV1). The parts
 * live in patch/ (core: errors and merge rules; json-patch; strategic; fields; apply); this module is
 * what the server and the tests import.
 *
 * Nothing here does I/O and no input is mutated: every function works on clones.
 */
export * from './patch/core.js';
export * from './patch/json-patch.js';
export * from './patch/strategic.js';
export * from './patch/fields.js';
export * from './patch/apply.js';
