/**
 * The complaint-rate guard's defaults (ADR 018), part of the relay contract: the relay's schema gives
 * them to `tenants[].complaintRate`, and the operator judges the fleet's summed complaints with them when
 * the SmtpRelay spec leaves a field out.
 */
export const COMPLAINT_RATE_DEFAULTS = Object.freeze({
  warn: 0.001,
  pause: 0.003,
  window: '24h',
  minVolume: 1000,
  cooldown: '24h',
});
