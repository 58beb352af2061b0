/**
 * Where complaints (ARF reports matched to a tenant and recipient) go besides the suppression list: the
 * complaint-rate guard. The relay passes its guard in (Relay.feedback.complaints); without one they are
 * only suppressed, counted and reported as events.
 */
export interface ComplaintSink {
  /** Never throws and never blocks. */
  complaint(tenant: string, recipient: string): void;
}

export const NO_COMPLAINT_GUARD: ComplaintSink = { complaint() {} };
