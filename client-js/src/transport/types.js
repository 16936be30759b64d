// The small interface both transports give the session.

/**
 * @typedef {Object} TransportClose
 * @property {number} code   WebSocket close code or WebTransport application code (0 if none)
 * @property {string} reason
 */

/**
 * Callbacks a transport calls. They are given when the transport is opened,
 * so nothing is lost between opening and use.
 * @typedef {Object} TransportHandlers
 * @property {(bytes: Uint8Array, datagram: boolean) => void} onMessage one protocol message (a WebSocket message, a stream frame or a datagram)
 * @property {(info: TransportClose) => void} onClose called once, when an open transport ends
 * @property {(error: Error) => void} onError a problem that does not end the transport by itself (e.g. a text frame)
 */

/**
 * An open transport.
 * @typedef {Object} Transport
 * @property {'websocket' | 'webtransport'} name
 * @property {boolean} datagrams whether it carries datagrams (Hello then sets the DATAGRAMS bit)
 * @property {number} maxDatagramSize largest datagram it may send (0 without datagrams)
 * @property {(bytes: Uint8Array) => void} send sends one message reliably, in order
 * @property {(bytes: Uint8Array) => boolean} sendDatagram sends one message as a datagram; false if it could not (too large, none)
 * @property {(code?: number, reason?: string) => void} close closes it; onClose is not called after this
 */

export {};
