// What the player examples share: the page's parameters, the connection, a
// status line and a log, and `window.lockstepExample` (read by
// e2e/players.test.js).
//
// Parameters (query string): `server` the Lockstep server's HTTP base
// (default: this page's origin), `event` the room (default 'example'),
// `token` an access token (not needed with `lockstep serve --dev`),
// `transport` 'auto' | 'websocket' | 'webtransport', `src` the media URL.

import { connect } from '../src/index.js';

const params = new URLSearchParams(location.search);

export const options = {
  server: params.get('server') ?? location.origin,
  event: params.get('event') ?? 'example',
  token: params.get('token') ?? undefined,
  transport: /** @type {'auto' | 'websocket' | 'webtransport'} */ (params.get('transport') ?? 'auto'),
  src: params.get('src'),
};

/** What the page exposes to the console and to the browser tests. */
export const example = /** @type {any} */ ({ session: null, controls: null, player: null, video: null, commands: [], errors: [], drives: 0, driveTypes: {}, fatal: null });
/** @type {any} */ (window).lockstepExample = example;

/** @param {string} line */
export function log(line) {
  const el = document.getElementById('log');
  if (el) el.textContent = `${new Date().toISOString().slice(11, 23)} ${line}\n${el.textContent}`.slice(0, 5000);
}

/** Waits until the element knows its duration (the player loaded the media). @param {HTMLMediaElement} video */
export function loaded(video) {
  return video.readyState >= 1 ? Promise.resolve() : new Promise((r) => video.addEventListener('loadedmetadata', () => r(undefined), { once: true }));
}

/**
 * Connects, then hands the session to `attach` (a player adapter) and
 * shows the room's state.
 * @param {(s: import('../src/session.js').Session, onCommand: (c: any) => void) => any} attach
 */
export async function join(attach) {
  try {
    const s = await connect({ url: options.server, eventId: options.event, token: options.token, transport: options.transport });
    example.session = s;
    const status = document.getElementById('status');
    const show = () => {
      if (status) status.textContent = `${s.status} · ${s.transport} · ${s.role} · ${s.viewers} watching · room ${s.timeline?.paused ? 'paused' : 'playing'}`;
    };
    for (const e of /** @type {const} */ (['status', 'role', 'viewers', 'timeline', 'transport'])) s.on(e, show);
    s.on('drive', (a) => {
      example.drives++;
      example.driveTypes[a.type] = (example.driveTypes[a.type] ?? 0) + 1;
    });
    s.on('error', (e) => {
      example.errors.push({ code: /** @type {any} */ (e).code, kind: /** @type {any} */ (e).kind, message: e.message });
      log(`error: ${e.message}`);
    });
    example.controls = attach(s, (c) => {
      example.commands.push({ kind: c.kind, outcome: c.outcome, position: c.position, rate: c.rate, error: c.error?.message });
      log(`${c.kind}${c.position !== undefined ? ` ${c.position.toFixed(2)} s` : ''}${c.rate !== undefined ? ` ×${c.rate}` : ''}: ${c.outcome}${c.error ? ` (${c.error.message})` : ''}`);
    });
    show();
    log(`joined ${options.event} as ${s.role}`);
  } catch (e) {
    example.fatal = e instanceof Error ? e.message : String(e);
    log(`failed: ${example.fatal}`);
  }
}
