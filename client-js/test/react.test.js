// lockstep-client/react: useLockstep with a minimal hooks runtime (state,
// effects with dependencies, refs, callbacks: the rules React follows), a
// fake session, and once with the real React (server rendering: the first
// render, before any effect).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as React from 'react';
import { renderToString } from 'react-dom/server';
import { useLockstep } from '../src/react.js';
import { FakeSession, QueuedVideo } from './support/fake-player.js';

/** A tiny hooks runtime for one component: render(props), unmount(). */
function mount(/** @type {(props: any) => any} */ component, /** @type {any} */ props) {
  /** @type {any[]} */
  const slots = [];
  /** @type {{deps: unknown[] | undefined, effect: () => any, cleanup?: any}[]} */
  let pending = [];
  let i = 0;
  let dirty = false;
  let out;
  const react = {
    useState(/** @type {any} */ init) {
      const k = i++;
      if (!(k in slots)) slots[k] = { value: typeof init === 'function' ? init() : init };
      const slot = slots[k];
      return [slot.value, (/** @type {any} */ next) => {
        slot.value = typeof next === 'function' ? next(slot.value) : next;
        dirty = true;
      }];
    },
    useRef(/** @type {any} */ init) {
      const k = i++;
      if (!(k in slots)) slots[k] = { current: init };
      return slots[k];
    },
    useCallback(/** @type {any} */ fn, /** @type {unknown[]} */ deps) {
      const k = i++;
      if (!(k in slots) || !same(slots[k].deps, deps)) slots[k] = { fn, deps };
      return slots[k].fn;
    },
    useEffect(/** @type {() => any} */ effect, /** @type {unknown[] | undefined} */ deps) {
      const k = i++;
      const prev = slots[k];
      if (!prev || !same(prev.deps, deps)) {
        slots[k] = { deps, cleanup: prev?.cleanup };
        pending.push(Object.assign(slots[k], { effect }));
      }
    },
  };
  const same = (/** @type {unknown[] | undefined} */ a, /** @type {unknown[] | undefined} */ b) =>
    a !== undefined && b !== undefined && a.length === b.length && a.every((x, j) => Object.is(x, b[j]));
  const render = (/** @type {any} */ p) => {
    props = p;
    for (let n = 0; n < 20; n++) {
      i = 0;
      dirty = false;
      out = component({ ...props, react });
      const run = pending;
      pending = [];
      for (const slot of run) {
        if (typeof slot.cleanup === 'function') slot.cleanup();
        slot.cleanup = /** @type {any} */ (slot).effect();
      }
      if (!dirty) return out;
    }
    throw new Error('render loop');
  };
  render(props);
  return {
    get out() {
      return out;
    },
    render,
    /** Re-renders if state changed since (after an event). */
    flush: () => (dirty ? render(props) : out),
    unmount() {
      for (const slot of slots) if (slot && typeof slot.cleanup === 'function') slot.cleanup();
    },
  };
}

/** A session the hook can use: the fake, plus what the hook reads. */
function fakeSession() {
  const s = /** @type {any} */ (new FakeSession());
  Object.assign(s, { status: 'connecting', transport: null, role: null, policy: null, viewers: 0, live: null, closed: 0 });
  s.timeline = null;
  s.close = () => {
    s.closed++;
    s.status = 'closed';
  };
  s.goLive = () => Promise.resolve(null);
  return s;
}

test('connects while mounted, re-renders on the events, binds the media element, commands go to the session, closes on unmount', async () => {
  /** @type {any[]} */
  const created = [];
  const video = new QueuedVideo();
  const ref = { current: /** @type {any} */ (null) };
  const Component = (/** @type {any} */ p) =>
    useLockstep({ react: p.react, url: 'http://127.0.0.1:8080', eventId: p.eventId, media: ref, createSession: (o) => (created.push(o), fakeSession()) });
  const c = mount(Component, { eventId: 'evt-1' });
  assert.equal(created.length, 1);
  assert.deepEqual(created[0], { url: 'http://127.0.0.1:8080', eventId: 'evt-1' }, 'the connection options, without the hook\'s own');
  const s = created[0];
  const session = c.out.session;
  assert.equal(c.out.status, 'connecting');
  assert.equal(session.attached, null, 'no element yet (the ref is empty until mounted)');

  // The element mounts; the session joins.
  ref.current = video;
  Object.assign(session, { status: 'open', transport: 'websocket', role: 'host', policy: 'host-only', viewers: 2, timeline: { paused: true, rate: 1 } });
  session.emit('status', 'open');
  c.flush();
  assert.equal(c.out.status, 'open');
  assert.equal(c.out.role, 'host');
  assert.equal(c.out.viewers, 2);
  assert.equal(c.out.paused, true);
  assert.equal(session.attached, video, 'the element is bound');

  // Its controls are commands; so are the hook's.
  video.play();
  video.flush();
  assert.deepEqual(session.commands.map((/** @type {any} */ x) => x.kind), ['play']);
  const play = c.out.play;
  void c.out.seek(30);
  assert.deepEqual(session.commands.map((/** @type {any} */ x) => [x.kind, x.arg]), [['play', undefined], ['seek', 30]]);

  // An error is part of the state.
  const err = new Error('forbidden');
  session.emit('error', err);
  c.flush();
  assert.equal(c.out.error, err);
  assert.equal(c.out.play, play, 'commands are stable');

  c.unmount();
  assert.equal(session.closed, 1);
  assert.equal(session.detaches, 1, 'the element was unbound');
  await assert.rejects(play(), { kind: 'not_connected' });
  void s;
});

test('a new eventId: the old session is closed, a new one made; attach: a player adapter instead of media', () => {
  /** @type {any[]} */
  const sessions = [];
  /** @type {any[]} */
  const attached = [];
  const Component = (/** @type {any} */ p) =>
    useLockstep({
      react: p.react,
      url: 'http://x',
      eventId: p.eventId,
      attach: (s) => {
        attached.push(s);
        return { element: /** @type {any} */ (null), attached: true, detach() {} };
      },
      createSession: () => {
        const s = fakeSession();
        sessions.push(s);
        return s;
      },
    });
  const c = mount(Component, { eventId: 'a' });
  assert.equal(sessions.length, 1);
  assert.deepEqual(attached, [sessions[0]]);
  c.render({ eventId: 'b' });
  assert.equal(sessions.length, 2);
  assert.equal(sessions[0].closed, 1);
  assert.deepEqual(attached, [sessions[0], sessions[1]]);
  c.render({ eventId: 'b' });
  assert.equal(sessions.length, 2, 'same options: same session');
  c.unmount();
  assert.equal(sessions[1].closed, 1);
});

test('bad input: no options, no React', () => {
  assert.throws(() => useLockstep(/** @type {any} */ (undefined)), { name: 'TypeError', message: /needs options/ });
  assert.throws(() => useLockstep(/** @type {any} */ ({ url: 'http://x', eventId: 'e' })), { name: 'TypeError', message: /react: React/ });
});

test('with the real React: the first render (server side) is connecting, with the commands', () => {
  /** @type {any} */
  let seen = null;
  function Watch() {
    const room = useLockstep({ react: React, url: 'http://127.0.0.1:1', eventId: 'evt-1' });
    seen = room;
    return React.createElement('p', null, `${room.status} ${room.viewers}`);
  }
  assert.equal(renderToString(React.createElement(Watch)), '<p>connecting 0</p>');
  assert.equal(seen.session, null, 'no effect ran: no connection on the server');
  assert.equal(typeof seen.pause, 'function');
});
