// The React example (examples/react.html): useLockstep with a plain
// <video controls>, its native controls driving the room. Bundled for the
// browser by `npm run examples` (React has no browser build of its own):
// examples/dist/react.js. Written without JSX so that it needs no transform.
//
// Parameters as the other examples: `server`, `event`, `token`, `transport`, `src`.

import * as React from 'react';
import { createRoot } from 'react-dom/client';
import { useLockstep } from '../src/react.js';

const h = React.createElement;
const params = new URLSearchParams(location.search);
const server = params.get('server') ?? location.origin;
const eventId = params.get('event') ?? 'example';
const token = params.get('token') ?? undefined;
const transport = /** @type {'auto' | 'websocket' | 'webtransport'} */ (params.get('transport') ?? 'auto');
const src = params.get('src') ?? '../demo/video.webm';

/** What the page exposes to the console and to the browser tests (as the other examples). */
const example = /** @type {any} */ ({ session: null, video: null, commands: [], errors: [], drives: 0, driveTypes: {}, fatal: null });
/** @type {any} */ (window).lockstepExample = example;

const controls = {
  /** @param {import('../src/controls.js').ControlCommand} c */
  onCommand: (c) => example.commands.push({ kind: c.kind, outcome: c.outcome, position: c.position, rate: c.rate, error: c.error?.message }),
};

function Watch() {
  const video = React.useRef(/** @type {HTMLVideoElement | null} */ (null));
  const room = useLockstep({ react: React, url: server, eventId, token, transport, media: video, controls });
  React.useEffect(() => {
    const s = room.session;
    example.session = s;
    example.video = video.current;
    if (!s) return;
    const offs = [s.on('drive', (a) => {
      example.drives++;
      example.driveTypes[a.type] = (example.driveTypes[a.type] ?? 0) + 1;
    }), s.on('error', (e) => example.errors.push({ code: /** @type {any} */ (e).code, kind: /** @type {any} */ (e).kind, message: e.message }))];
    return () => offs.forEach((off) => off());
  }, [room.session]);
  return h(
    'div',
    null,
    h('video', { ref: video, src, controls: true, muted: true, playsInline: true, width: 640, height: 360 }),
    h('p', { id: 'status' }, `${room.status} · ${room.transport ?? '–'} · ${room.role ?? '–'} · ${room.viewers} watching · room ${room.paused ? 'paused' : 'playing'}`),
    h('button', { id: 'play', onClick: () => void room.play().catch(() => {}) }, 'Play for everyone'),
    ' ',
    h('button', { id: 'pause', onClick: () => void room.pause().catch(() => {}) }, 'Pause for everyone'),
    room.error ? h('p', { id: 'error' }, room.error.message) : null,
  );
}

createRoot(/** @type {HTMLElement} */ (document.getElementById('root'))).render(h(Watch));
