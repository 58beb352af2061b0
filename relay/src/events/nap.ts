/**
 * The wait of the events loops (webhooks.ts, handoff.ts): a sleep that a commit to the outbox, new peers or
 * a stop cut short.
 */
export class Nap {
  private wake?: () => void;

  /** Resolves after `ms`, or earlier when woken; at once when the loop is `stopped`. */
  sleep(ms: number, stopped: boolean): Promise<void> {
    if (stopped) return Promise.resolve();
    return new Promise((resolve) => {
      let t: NodeJS.Timeout | undefined = undefined;
      const done = () => {
        clearTimeout(t);
        this.wake = undefined;
        resolve();
      };
      t = setTimeout(done, ms);
      this.wake = done;
    });
  }

  /** Ends the sleep under way, if any. */
  wakeUp(): void {
    this.wake?.();
  }
}
