/** Moved to relay/src/delivery/; this file keeps the former import path working. */
export { DeliveryEngine } from './delivery/engine.js';
export { HANDOFF_HEADER, type HandoffMeta, type EngineDeps } from './delivery/types.js';
export { handoffHeader } from './delivery/handoff.js';
