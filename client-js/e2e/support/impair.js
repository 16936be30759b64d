// Userspace impairment proxies for the browser tests (there is no `tc netem`
// here), the same model as the load harness's (benches/load/proxy.rs): every
// UDP packet, or every TCP read chunk, is delayed by a uniform random delay
// in [delay − jitter, delay + jitter] in each direction, and a share `loss`
// of them is lost. UDP packets are dropped (QUIC recovers what needs
// recovering) and may be reordered by the jitter. TCP cannot lose bytes in
// userspace, so a "lost" chunk is a retransmission: it is held back an extra
// `rtoMs` and, TCP being ordered, so is everything behind it.

import dgram from 'node:dgram';
import net from 'node:net';

/**
 * @typedef {{delayMs: number, jitterMs: number, loss: number, rtoMs?: number}} Impairment
 * @typedef {{packets: number, lost: number}} ProxyStats
 */

/** The impaired viewer: 50 ± 20 ms each way, 2 % loss. */
export const IMPAIRED = Object.freeze({ delayMs: 50, jitterMs: 20, loss: 0.02, rtoMs: 200 });

/** @param {Impairment} imp */
function sample(imp) {
  return Math.max(0, imp.delayMs - imp.jitterMs + Math.random() * 2 * imp.jitterMs);
}

/**
 * A TCP proxy on 127.0.0.1 to `127.0.0.1:port` (HTTP, WebSocket: a page
 * loaded through it gets everything, media included, impaired).
 * @param {number} port @param {Impairment} imp
 */
export async function tcpProxy(port, imp) {
  /** @type {ProxyStats} */
  const stats = { packets: 0, lost: 0 };
  /** @type {Set<net.Socket>} */
  const sockets = new Set();
  /**
   * Copies `from` to `to`, each chunk delayed; order kept (a chunk never
   * overtakes the one before it).
   * @param {net.Socket} from @param {net.Socket} to
   */
  const pipe = (from, to) => {
    /** @type {{at: number, chunk: Buffer | null}[]} chunks in order, each with its due time (null: the end) */
    const queue = [];
    /** @type {NodeJS.Timeout | null} */
    let timer = null;
    // One timer per direction, always for the queue's head: chunks leave in
    // the order they came (timers of different delays may fire out of order).
    const pump = () => {
      timer = null;
      while (queue.length && queue[0].at <= Date.now()) {
        const { chunk } = /** @type {{at: number, chunk: Buffer | null}} */ (queue.shift());
        if (chunk === null) to.end();
        else if (!to.destroyed) to.write(chunk);
      }
      if (queue.length) timer = setTimeout(pump, Math.max(0, queue[0].at - Date.now()));
    };
    const push = (/** @type {Buffer | null} */ chunk, /** @type {number} */ at) => {
      queue.push({ at: Math.max(at, queue.at(-1)?.at ?? 0), chunk });
      timer ??= setTimeout(pump, Math.max(0, queue[0].at - Date.now()));
    };
    from.on('data', (chunk) => {
      stats.packets++;
      let at = Date.now() + sample(imp);
      if (Math.random() < imp.loss) {
        stats.lost++;
        at += imp.rtoMs ?? 200;
      }
      push(chunk, at);
    });
    from.on('end', () => push(null, Date.now()));
    from.on('error', () => to.destroy());
    from.on('close', () => {
      const wait = Math.max(0, (queue.at(-1)?.at ?? 0) - Date.now()) + 50;
      setTimeout(() => to.destroy(), wait);
    });
  };
  const server = net.createServer((client) => {
    const up = net.connect(port, '127.0.0.1');
    client.setNoDelay(true);
    up.setNoDelay(true);
    sockets.add(client).add(up);
    client.on('close', () => sockets.delete(client));
    up.on('close', () => sockets.delete(up));
    pipe(client, up);
    pipe(up, client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  return {
    port: /** @type {net.AddressInfo} */ (server.address()).port,
    stats,
    close() {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

/**
 * A UDP proxy on 127.0.0.1 to `127.0.0.1:port` (QUIC): one upstream socket
 * per client address; packets delayed (and so possibly reordered) and lost.
 * @param {number} port @param {Impairment} imp
 */
export async function udpProxy(port, imp) {
  /** @type {ProxyStats} */
  const stats = { packets: 0, lost: 0 };
  const front = dgram.createSocket('udp4');
  /** @type {Map<string, dgram.Socket>} */
  const ups = new Map();
  let closed = false;
  /** @param {() => void} send */
  const later = (send) => {
    stats.packets++;
    if (Math.random() < imp.loss) {
      stats.lost++;
      return;
    }
    setTimeout(() => {
      if (!closed) send();
    }, sample(imp));
  };
  front.on('message', (msg, from) => {
    const key = `${from.address}:${from.port}`;
    let up = ups.get(key);
    if (!up) {
      const u = dgram.createSocket('udp4');
      u.on('message', (m) => later(() => front.send(m, from.port, from.address)));
      u.on('error', () => {});
      ups.set(key, u);
      up = u;
    }
    const u = up;
    later(() => u.send(msg, port, '127.0.0.1'));
  });
  front.on('error', () => {});
  await new Promise((resolve) => front.bind(0, '127.0.0.1', () => resolve(undefined)));
  return {
    port: front.address().port,
    stats,
    close() {
      if (closed) return;
      closed = true;
      front.close();
      for (const u of ups.values()) u.close();
      ups.clear();
    },
  };
}
