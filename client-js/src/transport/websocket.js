// WebSocket transport: subprotocol `lockstep.v1`, one protocol message per
// binary message, no length prefix (SPEC 5.1).

/** @typedef {import('./types.js').Transport} Transport */
/** @typedef {import('./types.js').TransportHandlers} TransportHandlers */

/** The WebSocket subprotocol of the binary protocol. */
export const SUBPROTOCOL = 'lockstep.v1';

/**
 * Opens a WebSocket transport. Resolves once the socket is open with the
 * subprotocol granted; rejects if it closes first, the server does not grant
 * `lockstep.v1` (it would speak the legacy JSON dialect), or `signal` aborts.
 * @param {{url: string, signal?: AbortSignal, WebSocket?: typeof WebSocket} & TransportHandlers} o
 * @returns {Promise<Transport>}
 */
export function openWebSocket(o) {
  const Impl = o.WebSocket ?? globalThis.WebSocket;
  return new Promise((resolve, reject) => {
    if (!Impl) return reject(new Error('WebSocket is not available'));
    if (o.signal?.aborted) return reject(abortError());
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new Impl(o.url, [SUBPROTOCOL]);
    } catch (e) {
      return reject(e);
    }
    ws.binaryType = 'arraybuffer';
    let open = false;
    let closedByUs = false;
    let ended = false;
    const onAbort = () => {
      closedByUs = true;
      try {
        ws.close(1000);
      } catch {}
      reject(abortError());
    };
    o.signal?.addEventListener('abort', onAbort, { once: true });

    /** @type {Transport} */
    const transport = {
      name: 'websocket',
      datagrams: false,
      maxDatagramSize: 0,
      send(bytes) {
        if (ws.readyState === 1) ws.send(bytes);
      },
      sendDatagram() {
        return false;
      },
      close(code = 1000, reason = '') {
        closedByUs = true;
        try {
          ws.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason.slice(0, 100));
        } catch {}
      },
    };

    ws.onopen = () => {
      o.signal?.removeEventListener('abort', onAbort);
      if (ws.protocol !== SUBPROTOCOL) {
        closedByUs = true;
        ws.close(1000);
        reject(new Error(`the server did not grant the ${SUBPROTOCOL} subprotocol`));
        return;
      }
      open = true;
      resolve(transport);
    };
    ws.onmessage = (ev) => {
      if (!open || closedByUs) return;
      const d = ev.data;
      if (d instanceof ArrayBuffer) o.onMessage(new Uint8Array(d), false);
      else if (ArrayBuffer.isView(d)) o.onMessage(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), false);
      else o.onError(new Error('unexpected non-binary WebSocket message'));
    };
    ws.onerror = () => {
      // A close event always follows; nothing to do here.
    };
    ws.onclose = (ev) => {
      o.signal?.removeEventListener('abort', onAbort);
      if (!open) {
        reject(new Error(`WebSocket closed before opening (code ${ev.code})`));
        return;
      }
      if (ended || closedByUs) return;
      ended = true;
      o.onClose({ code: ev.code, reason: ev.reason });
    };
  });
}

function abortError() {
  const e = new Error('aborted');
  e.name = 'AbortError';
  return e;
}
