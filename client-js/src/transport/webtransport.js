// WebTransport transport (SPEC 5.2): one client-opened bidirectional stream
// of length-prefixed frames (Hello, Welcome, Command, Nack, Error, counts, and
// the TimelineChanged a Nack repairs…), plus datagrams, one message each:
// Tick, Pong and each TimelineChanged (once: the session's Hello sets
// DATAGRAM_CHANGES) inbound; Ping and Report outbound. A datagram is never
// larger than the session's maxDatagramSize nor 1200 bytes.

import { encodeFrame, FrameDecoder, LIMITS, LockstepDecodeError } from '../codec.js';

/** @typedef {import('./types.js').Transport} Transport */
/** @typedef {import('./types.js').TransportHandlers} TransportHandlers */

/** @typedef {import('../types.js').CertificateHash} CertificateHash */

/**
 * Hex (colons and spaces allowed) to an ArrayBuffer, for serverCertificateHashes.
 * @param {string} hex
 * @returns {ArrayBuffer}
 */
export function hexToArrayBuffer(hex) {
  const clean = String(hex).replace(/[\s:]/g, '');
  if (clean.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(clean)) throw new TypeError('invalid certificate hash hex');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out.buffer;
}

/**
 * The WebTransport constructor options for a server (exported for tests).
 * @param {CertificateHash[] | undefined} hashes
 * @param {any} Impl the WebTransport constructor
 */
export function webTransportOptions(hashes, Impl) {
  /** @type {Record<string, unknown>} */
  const opts = { requireUnreliable: true };
  if (hashes && hashes.length) {
    opts.serverCertificateHashes = hashes.map((h) => ({
      algorithm: h.algorithm,
      value: typeof h.value === 'string' ? hexToArrayBuffer(h.value) : h.value,
    }));
  }
  // Chrome 127+: prefer latency to throughput. Only set where the attribute exists.
  if (Impl && Impl.prototype && 'congestionControl' in Impl.prototype) opts.congestionControl = 'low-latency';
  return opts;
}

/**
 * Opens a WebTransport session and its stream. Resolves once both are ready.
 * @param {{url: string, certificateHashes?: CertificateHash[], signal?: AbortSignal, WebTransport?: any} & TransportHandlers} o
 * @returns {Promise<Transport>}
 */
export async function openWebTransport(o) {
  const Impl = o.WebTransport ?? /** @type {any} */ (globalThis).WebTransport;
  if (!Impl) throw new Error('WebTransport is not available');
  if (o.signal?.aborted) throw abortError();
  const wt = new Impl(o.url, webTransportOptions(o.certificateHashes, Impl));
  let closedByUs = false;
  let ended = false;
  const onAbort = () => {
    closedByUs = true;
    try {
      wt.close({ closeCode: 0, reason: 'cancelled' });
    } catch {}
  };
  o.signal?.addEventListener('abort', onAbort, { once: true });
  // A session that fails makes `closed` reject too; keep it from being unhandled.
  wt.closed.catch(() => {});
  /** @type {{readable: ReadableStream<Uint8Array>, writable: WritableStream<Uint8Array>}} */
  let stream;
  try {
    await wt.ready;
    if (o.signal?.aborted) throw abortError();
    stream = await wt.createBidirectionalStream();
    if (o.signal?.aborted) throw abortError();
  } catch (e) {
    onAbort();
    throw o.signal?.aborted ? abortError() : e;
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }

  const writer = stream.writable.getWriter();
  const dgWriter = wt.datagrams?.writable ? wt.datagrams.writable.getWriter() : null;
  const nativeMax = Number(wt.datagrams?.maxDatagramSize) || LIMITS.MAX_DATAGRAM;

  /** @param {number} code @param {string} reason */
  const end = (code, reason) => {
    if (ended || closedByUs) return;
    ended = true;
    o.onClose({ code, reason });
  };

  /** @type {Transport} */
  const transport = {
    name: 'webtransport',
    datagrams: dgWriter !== null && Boolean(wt.datagrams?.readable),
    maxDatagramSize: dgWriter ? Math.min(nativeMax, LIMITS.MAX_DATAGRAM) : 0,
    send(bytes) {
      if (ended || closedByUs) return;
      writer.write(encodeFrame(bytes)).catch(() => {});
    },
    sendDatagram(bytes) {
      if (!dgWriter || ended || closedByUs || bytes.length > transport.maxDatagramSize) return false;
      dgWriter.write(bytes).catch(() => {});
      return true;
    },
    close(code = 0, reason = '') {
      if (closedByUs) return;
      closedByUs = true;
      try {
        wt.close({ closeCode: code, reason: reason.slice(0, 100) });
      } catch {}
    },
  };

  // The stream: frames in, until it ends or breaks.
  (async () => {
    const reader = stream.readable.getReader();
    const frames = new FrameDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        frames.push(value);
        for (let f = frames.next(); f !== null; f = frames.next()) o.onMessage(f, false);
      }
      end(0, 'stream ended');
    } catch (e) {
      if (e instanceof LockstepDecodeError) {
        o.onError(e);
        transport.close(e.code, e.message);
        ended = true;
        o.onClose({ code: e.code, reason: e.message });
        return;
      }
      end(0, e instanceof Error ? e.message : String(e));
    }
    if (!closedByUs) transport.close(0, 'stream ended');
  })();

  // Datagrams in.
  if (wt.datagrams?.readable) {
    (async () => {
      const reader = wt.datagrams.readable.getReader();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          if (!closedByUs) o.onMessage(value instanceof Uint8Array ? value : new Uint8Array(value), true);
        }
      } catch {
        // The session's end is reported by `closed` or the stream.
      }
    })();
  }

  wt.closed.then(
    (/** @type {{closeCode?: number, reason?: string} | undefined} */ info) => end(info?.closeCode ?? 0, info?.reason ?? ''),
    (/** @type {unknown} */ e) => end(0, e instanceof Error ? e.message : String(e)),
  );
  return transport;
}

function abortError() {
  const e = new Error('aborted');
  e.name = 'AbortError';
  return e;
}
