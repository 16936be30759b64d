// The protocol's version, hard limits and capability bits (SPEC sections 8.1, 8.2, 11).

/** Protocol version sent in Hello. */
export const PROTOCOL_VERSION = 1;

/** Hard limits of the protocol (SPEC section 8.1). */
export const LIMITS = Object.freeze({
  MAX_FRAME: 8192,
  MAX_DATAGRAM: 1200,
  MAX_EVENT_ID: 128,
  MAX_DEVICE_ID: 128,
  MAX_TOKEN: 4096,
  MAX_NAME: 64,
  MAX_ERROR_MESSAGE: 256,
  MAX_REASON: 55,
  MAX_EMOJI: 32,
  MAX_CHAT_TEXT: 1000,
  MAX_MEDIA_ID: 128,
  MAX_MEDIA_URL: 1024,
  MAX_MEDIA_TITLE: 128,
  MAX_QUEUE: 50,
  MAX_REACTION_KINDS: 16,
  MIN_RATE_MILLI: 250,
  MAX_RATE_MILLI: 4000,
  MAX_POSITION_MS: 4294967295,
});

/**
 * Capability bits of Hello.caps (SPEC section 8.2). DATAGRAM_CHANGES (with
 * DATAGRAMS): each TimelineChanged comes once, as a datagram; a lost one is
 * asked for with a Nack (SPEC 5.2).
 */
export const CAPS = Object.freeze({ DATAGRAMS: 1, PRESENCE: 2, ACKS: 4, LIVE: 8, DATAGRAM_CHANGES: 16, REACTIONS: 32, CHAT: 64, MEDIA: 128 });
