// A throwaway redis-server for the scale-out browser tests (Debian's
// `redis-server`, which .ci/test installs): a free port on 127.0.0.1, no
// persistence, killed by `stop()`.

import { spawn } from 'node:child_process';
import net from 'node:net';

/** A free TCP port on 127.0.0.1. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (srv.address());
      srv.close(() => resolve(port));
    });
  });
}

/** Whether 127.0.0.1:`port` accepts a connection. @param {number} port */
function accepts(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Starts redis-server and waits until it accepts connections.
 * @returns {Promise<{url: string, stop: () => Promise<void>}>}
 */
export async function startRedis() {
  const port = /** @type {number} */ (await freePort());
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  /** @type {string[]} */
  const log = [];
  proc.stderr.on('data', (b) => log.push(String(b)));
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  const spawnFailed = new Promise((_, reject) =>
    proc.once('error', (e) => reject(new Error(`redis-server did not start (apt-get install -y redis-server; .ci/test does it): ${e.message}`))),
  );
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (await Promise.race([accepts(port), spawnFailed])) break;
    if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}: ${log.join('')}`);
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`redis-server did not come up on port ${port}: ${log.join('')}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    url: `redis://127.0.0.1:${port}/`,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        await exited;
      }
    },
  };
}
