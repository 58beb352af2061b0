import net from 'node:net';

/**
 * A port on `address` that nothing listens on: bound, read and closed, so connecting to it is refused
 * (a "down" next hop) until a test starts a server on it.
 */
export async function unusedPort(address = '127.0.0.1'): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, address, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Whether a process id is alive (signal 0). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
