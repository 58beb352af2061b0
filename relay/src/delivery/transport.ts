/**
 * One transaction's worth of delivery: the recipients of one message that share a route go through the
 * route's hops (MX hosts or a smarthost, then the backups) on a reused or new session, within the pool's
 * and the destination's caps. Returns an outcome per recipient; never throws.
 */
import type { Readable } from 'node:stream';
import { OutboundSession, HopError, type Hop, type TxResult } from '../outbound.js';
import type { Route } from '../router.js';
import { classify, resultOf, type Cause, type DnsFailure } from './classify.js';
import type { Destination } from './sessions.js';
import type { BodySource, EngineDeps, Job, Outcome } from './types.js';
import { deliveredSize } from '../dkim/stored.js';
import { mxAllowed } from '../mta-sts/policy.js';
import { verifies } from '../outbound.js';
import type { TlsDecision } from './tls-policy.js';
import { envelopeSender } from '../feedback/return-path.js';

/** What a job needs from the engine. */
export interface JobContext {
  d: EngineDeps;
  running: () => boolean;
  /** The message's body, opened afresh for each transaction. */
  bodyOf: (job: Job) => BodySource;
}

/** A recipient's outcome as the classifier decides it for `cause`, with the text to record. */
function decided(cause: Cause, reply: string): Pick<Outcome, 'result' | 'status' | 'reply'> {
  const c = classify(cause);
  return { result: resultOf(c.decision), status: c.status, reply };
}

/** A stream that was opened for a transaction that did not read it to the end. */
export function discard(body: Buffer | Readable | undefined): void {
  if (body && !Buffer.isBuffer(body) && !body.destroyed) body.destroy();
}

/** A hop with the TLS policy it was planned under (MX hosts; routes carry only their own mode). */
type PlannedHop = Hop & {
  /** The level for metrics: the MX TLS level, or the route's mode. */
  level: string;
  /** Where an MX host's level came from, for the failure text. */
  source?: TlsDecision['source'];
  /** The destination's MTA-STS mode, when it has a policy. */
  sts?: 'enforce' | 'testing';
};

/** The trust anchors for a hop whose certificate must verify (outboundTls.caFile added to the system CAs). */
function caFor(d: EngineDeps, tls: Hop['tls']): { ca?: string[] } {
  const ca = verifies(tls) ? d.outboundTls?.ca() : undefined;
  return ca ? { ca } : {};
}

export function backupHops(d: EngineDeps): PlannedHop[] {
  return d.cfg.routing.backups.map((b) => ({
    host: b.host,
    port: b.port,
    name: b.host,
    tls: b.tls,
    ...caFor(d, b.tls),
    credentials: b.credentials,
    kind: 'backup',
    level: b.tls,
  }));
}

async function hopsFor(
  d: EngineDeps,
  route: Route,
  queueId: string,
): Promise<{ hops: PlannedHop[] } | { dns: DnsFailure; reason: string } | { policy: string }> {
  const backups = backupHops(d);
  if (route.kind !== 'mx') {
    const h = route.host;
    return {
      hops: [
        {
          host: h.host,
          port: h.port,
          name: h.host,
          tls: h.tls,
          ...caFor(d, h.tls),
          credentials: h.credentials,
          kind: route.kind,
          level: h.tls,
        },
        ...backups,
      ],
    };
  }
  // the MX lookup and the MTA-STS discovery (bounded by outboundTls.mtaSts.fetchTimeout) run together
  const [res, plan] = await Promise.all([
    d.resolver.resolveDestination(route.domain),
    d.outboundTls?.forMx(route.domain),
  ]);
  if (res.kind === 'permanent') return { dns: res.failure, reason: res.reason };
  if (res.kind === 'temporary')
    return backups.length ? { hops: backups } : { dns: 'temporary', reason: res.reason };
  const level = plan?.level ?? 'opportunistic';
  const tls: Hop['tls'] = level === 'required' ? 'encrypt' : level;
  const sts = plan?.sts?.mode === 'enforce' || plan?.sts?.mode === 'testing' ? plan.sts.mode : undefined;
  const hops: PlannedHop[] = [];
  const refused: string[] = [];
  for (const h of res.hosts) {
    if (plan && !plan.mxFilter(h.exchange)) {
      refused.push(h.exchange);
      continue;
    }
    if (sts === 'testing' && plan?.sts && !mxAllowed(plan.sts, h.exchange)) {
      d.outboundTls?.violation('testing', 'mx-mismatch');
      d.log.warn(
        { event: 'mta-sts.testing', queueId, domain: route.domain, mx: h.exchange, reason: 'mx-mismatch' },
        'MTA-STS policy (testing) does not list this MX host; delivering anyway',
      );
    }
    for (const a of h.addresses)
      hops.push({
        host: a,
        port: d.cfg.dns.mxPort,
        name: h.exchange,
        tls,
        ...caFor(d, tls),
        kind: 'mx',
        level,
        ...(plan ? { source: plan.source } : {}),
        ...(sts ? { sts } : {}),
      });
  }
  if (refused.length) {
    d.outboundTls?.violation('enforce', 'mx-mismatch');
    const reason = `MTA-STS policy of ${route.domain} (mode enforce, mx ${plan?.sts?.mx.join(' ') ?? ''}) does not list MX host ${refused.join(', ')}`;
    d.log.warn({ event: 'mta-sts.enforce', queueId, domain: route.domain, refused }, reason);
    if (hops.length === 0 && backups.length === 0) return { policy: reason };
  }
  return { hops: [...hops, ...backups] };
}

/** Whether a failure to open a session was about TLS (no STARTTLS, handshake, certificate). */
function tlsFailure(e: HopError): boolean {
  return (
    e.errCode === 'ETLS' ||
    /\b(STARTTLS|TLS|SSL|certificate|self[- ]signed|altnames|Hostname\/IP does not match)\b/i.test(e.reply)
  );
}

function hopFailed(d: EngineDeps, queueId: string, hop: Hop, reply: string, msg: string): void {
  d.log.info({ event: 'hop.failed', queueId, hop: `${hop.name}[${hop.host}]:${hop.port}`, reply }, msg);
}

export async function runDelivery(ctx: JobContext, dest: Destination, job: Job): Promise<void> {
  const { d } = ctx;
  const { msg, route, rcpts } = job;
  const env = msg.env;
  const out = new Map<number, Outcome>();
  const all = (o: Omit<Outcome, 'route'> & { route?: Outcome['route'] }) => {
    for (const i of rcpts) out.set(i, { route: route.kind, ...o });
  };
  const started = process.hrtime.bigint();
  const shaper = d.tenancy.shaper;
  /** Room held on a pool address for this attempt (so concurrent attempts cannot overshoot its caps). */
  let reserved: { pool: string; ip: string } | undefined;
  let body: Buffer | Readable | undefined;
  try {
    const until = shaper.backoffUntil(dest.key);
    const backedOff = until !== undefined && until > d.now();
    if (backedOff && d.cfg.routing.backups.length === 0) {
      return all({
        ...decided(
          { held: 'backoff' },
          `destination backed off after a throttling reply, until ${new Date(until).toISOString()}`,
        ),
        notBefore: until,
      });
    }
    const pool = d.tenancy.poolOf(env.tenant);
    let egress: { ip: string; ehlo: string; bind: boolean } | undefined;
    if (pool && d.tenancy.pools.has(pool)) {
      const pick = d.tenancy.pools.pick(pool, rcpts.length);
      if (!pick.ok)
        return all({
          ...decided({ held: 'pool-cap' }, `ip pool ${pool}: ${pick.reason}`),
          notBefore: pick.retryAt,
        });
      egress = { ip: pick.ip, ehlo: pick.ehlo, bind: pick.bind };
      reserved = { pool, ip: pick.ip };
    }
    // while the destination is backed off, only the backup routes are tried
    const plan = backedOff ? { hops: backupHops(d) } : await hopsFor(d, route, env.id);
    if ('dns' in plan) return all(decided({ dns: plan.dns }, plan.reason));
    if ('policy' in plan)
      return all(
        decided({ stage: 'connect', errCode: 'ETLS', connected: false, message: plan.policy }, plan.policy),
      );
    const openBody = ctx.bodyOf(job);
    const first = env.rcpts[rcpts[0]];
    const envelope = {
      from: job.handoff ? env.from : envelopeSender(d.cfg, env, rcpts, d.now()),
      to: rcpts.map((i) => env.rcpts[i].address),
      size: deliveredSize(env),
      eightBit: env.eightBit,
      dsn: { ret: env.dsn.ret, envid: env.dsn.envid, notify: first.notify, orcpt: first.orcpt },
    };
    let last: HopError | undefined;
    if (route.kind === 'mx' && !dest.mxChecked && plan.hops[0]?.kind === 'mx') {
      // shaping rules may name the MX host (e.g. every domain hosted at one provider)
      dest.mxChecked = true;
      dest.shape(shaper, plan.hops[0].name);
    }
    const localAddress = egress?.bind ? egress.ip : undefined;
    let reused = dest.takeIdle(d.cfg.delivery, localAddress);
    if (
      reused &&
      !plan.hops.some(
        (p) => p.host === reused!.hop.host && p.port === reused!.hop.port && p.tls === reused!.hop.tls,
      )
    ) {
      // opened under another TLS policy (a reload, a new MTA-STS policy), or to a host no longer allowed
      reused.quit();
      reused = undefined;
    }
    for (let h = 0; h < plan.hops.length; h++) {
      const planned = plan.hops[h];
      const hop = reused?.hop ?? planned;
      let session: OutboundSession;
      const wasReused = !!reused;
      try {
        session =
          reused ??
          (await OutboundSession.open(hop, {
            ehloName: egress?.ehlo ?? d.cfg.hostname,
            ...(localAddress ? { localAddress } : {}),
            connectTimeoutMs: d.cfg.delivery.connectTimeoutMs,
            commandTimeoutMs: d.cfg.delivery.commandTimeoutMs,
          }));
      } catch (e) {
        last = e instanceof HopError ? e : new HopError('connect', undefined, (e as Error).message);
        if (planned.tls !== 'opportunistic' && planned.tls !== 'none' && tlsFailure(last)) {
          // the hop could not meet its TLS level: say which policy asked for it
          d.outboundTls?.countSession(planned.level, 'failed');
          if (planned.sts === 'enforce') d.outboundTls?.violation('enforce', 'tls');
          const why =
            planned.kind === 'mx'
              ? `TLS policy ${planned.level} (${planned.sts === 'enforce' ? 'MTA-STS enforce' : (planned.source ?? 'default')})`
              : `route tls ${planned.level}`;
          last = new HopError(
            last.stage,
            last.code,
            `${why}: ${last.reply}`,
            last.errCode,
            last.response,
            last.connected,
          );
        }
        if (classify(last.replyInfo).decision === 'throttle') shaper.onThrottle(dest.key);
        hopFailed(d, env.id, hop, last.reply, 'next hop unavailable');
        continue;
      }
      if (!wasReused) {
        d.outboundTls?.countSession(planned.level, session.tlsResult);
        if (planned.sts === 'testing' && session.tlsResult !== 'verified') {
          d.outboundTls?.violation('testing', 'tls');
          d.log.warn(
            {
              event: 'mta-sts.testing',
              queueId: env.id,
              mx: hop.name,
              reason: 'tls',
              tls: session.tlsResult,
            },
            'MTA-STS policy (testing) would refuse this session (no verified TLS); delivering anyway',
          );
        }
      }
      reused = undefined;
      let tx: TxResult;
      for (let i = 0; i < 1000; i++) {
        const t = shaper.takeSend(dest.key, dest.limits);
        if (t.ok || !ctx.running()) break;
        await new Promise((r) => setTimeout(r, Math.min(t.waitMs, 1000)));
      }
      try {
        discard(body);
        body = await openBody();
        tx = await session.send(envelope, body);
      } catch (e) {
        const he = e instanceof HopError ? e : new HopError('data', undefined, (e as Error).message);
        const c = classify(he.replyInfo);
        if (c.decision === 'throttle') shaper.onThrottle(dest.key);
        if (wasReused && he.code === undefined && he.stage !== 'data' && c.decision === 'defer') {
          h--; // a cached session that died while idle: dial the same hop again
          continue;
        }
        last = he;
        // refused at DATA, or for good at MAIL FROM: the same at every hop; a 4xx to MAIL FROM: next hop
        const result = resultOf(c.decision);
        if (he.stage === 'data' || (he.stage === 'mail' && result === 'bounced')) {
          return all({
            result,
            status: c.status,
            reply: he.reply,
            remoteMta: hop.name,
            route: hop.kind === 'backup' ? 'backup' : route.kind,
          });
        }
        hopFailed(d, env.id, hop, he.reply, 'next hop refused the transaction');
        continue;
      }
      dest.release(d.cfg.delivery, session, ctx.running());
      const delivered = tx.rcpts.filter((r) => r.ok).length;
      if (delivered) shaper.onSuccess(dest.key);
      if (egress && pool && delivered) {
        d.tenancy.pools.record(pool, egress.ip, delivered);
        d.metrics.egressSent.inc({ pool, ip: egress.ip }, delivered);
      }
      const kind = hop.kind === 'backup' ? 'backup' : route.kind;
      // nodemailer reports a recipient accepted only on a 2xx to the end of DATA; a refused one with RCPT's reply
      const causes: Cause[] = tx.rcpts.map((r) =>
        r.ok
          ? { stage: 'data', code: 250, message: r.reply }
          : { stage: 'rcpt', code: r.code, message: r.reply },
      );
      if (causes.some((c) => classify(c).decision === 'throttle')) shaper.onThrottle(dest.key);
      tx.rcpts.forEach((r, k) =>
        out.set(rcpts[k], {
          ...decided(causes[k], r.reply),
          remoteMta: hop.name,
          route: kind,
          ...(egress ? { egress: egress.ip } : {}),
        }),
      );
      return;
    }
    // Every hop failed before a transaction could start (connect, greeting, EHLO, TLS, AUTH, or a 4xx to
    // MAIL): that is a problem of the route, not of the recipients, so defer, even on a 5xx greeting or a
    // refused login; maxAge bounds how long.
    // The classifier defers a refusal at the connect and session stages (class 4 status).
    if (last) all(decided(last.replyInfo, last.reply));
    else all(decided({ errCode: 'ECONNECTION', connected: false }, 'no usable next hop'));
  } catch (e) {
    all(decided({ localError: true }, `local error: ${(e as Error).message}`));
  } finally {
    discard(body);
    if (reserved) d.tenancy.pools.release(reserved.pool, reserved.ip, rcpts.length);
    const secs = Number(process.hrtime.bigint() - started) / 1e9;
    const anyDelivered = [...out.values()].some((o) => o.result === 'delivered');
    d.metrics.deliveryDuration.observe(
      { result: anyDelivered ? 'delivered' : ([...out.values()][0]?.result ?? 'deferred') },
      secs,
    );
    job.resolve(out);
  }
}
