import { pino, type Logger } from 'pino';

export type { Logger };

/** JSON logs on stdout. Never log passwords or message bodies. */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { svc: 'cartero-relay' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: ['password', '*.password', 'pass', '*.pass'], remove: true },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
