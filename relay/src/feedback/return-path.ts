/**
 * Which envelope sender a delivery uses (docs/adr/016-feedback-loop.md): a tenant with `returnPath` sends
 * each recipient in its own transaction from `<prefix>+<token>@<bounce domain>`; everything else keeps the
 * sender it was given. The envelope on disk is never changed: our own DSNs still go to the original sender.
 */
import type { RelayConfig } from '../config.js';
import type { Envelope } from '../spool/types.js';
import { returnPathAddress } from './token.js';

/** Whether a message's recipients each need a transaction of their own (one token per recipient). */
export function tagsReturnPath(cfg: Pick<RelayConfig, 'tenants' | 'feedback'>, env: Envelope): boolean {
  // the null sender (our DSNs) stays null; a message handed over by a peer keeps its own sender there
  return (
    env.from !== '' &&
    env.origin === 'smtp' &&
    !!cfg.feedback.key &&
    !!cfg.tenants.get(env.tenant)?.returnPath
  );
}

/** The MAIL FROM of a transaction of `env` to the recipients `rcpts` (indexes into env.rcpts). */
export function envelopeSender(
  cfg: Pick<RelayConfig, 'tenants' | 'feedback'>,
  env: Envelope,
  rcpts: number[],
  now: number,
): string {
  if (rcpts.length !== 1 || !tagsReturnPath(cfg, env)) return env.from;
  const rp = cfg.tenants.get(env.tenant)!.returnPath!;
  return returnPathAddress(
    cfg.feedback.key!,
    rp,
    { tenant: env.tenant, queueId: env.id, recipient: env.rcpts[rcpts[0]].address },
    now,
  );
}
