// How Chromium's presented frames follow the element's clock, and how the
// drift controller steers them (a measurement for BENCHMARKS.md, not a test).
//
//   node scripts/cadence-probe.mjs rates            the frames against the clock at rates 1, 1.001, 1.005, 0.995
//   node scripts/cadence-probe.mjs steer [offsetMs] [pacedStartMs]
//   node scripts/cadence-probe.mjs pulses ['[[rate, ms], ...]']
//   node scripts/cadence-probe.mjs relock [trials] [rate] [ms] [settleMs] [phases]
//   node scripts/cadence-probe.mjs plan [trials] ['[[rate, ms or −frames], ...]'] [settleMs]
//
// One headless Debian Chromium page plays demo/video.webm (25 fps) from a
// local HTTP server; the frames are recorded with requestVideoFrameCallback
// (media time, expected display time) and the position measured as the test
// suite measures it: the frames of the last second, each carried to now at
// the element's rate, their mean.
// - `rates`: the frames minus `currentTime`, every 0.5 s, while the rate is
//   held at each value in turn: whether the frames follow the clock.
// - `steer`: the client's own DriftController (src/drift.js, as the session
//   uses it: a step every 250 ms and every frame handed to it) keeps the
//   element on a room that plays from `offsetMs` (12) behind it, with the
//   paced fine band (`pacedStartMs`, default the controller's) or without it
//   (0: the stepped law everywhere); prints the frames' drift from the room
//   every 0.5 s and |drift| p50 / p95 / max from 8 s to 40 s, and the rate
//   changes. `LOCKSTEP_E2E_CLIENT_SRC=<dir>` steers with another client's
//   `src/` (an older commit's from `git archive`, for before/after figures).
// - `pulses`: plays the plan (each rate for so many ms; by default the room's
//   rate with short 2 % and 1 s 0.5 % runs between, each way) and prints, every
//   100 ms, the clock against the wall clock (`currentTime` less the time
//   elapsed, ms) and the frames against the clock (the last 400 ms of frames,
//   each carried at the rates played since): how far the frames go when the
//   clock is moved, and when.
// - `relock`: `trials` (10) pulses at `rate` (1.05; every other one 2 − rate)
//   for `ms` (120), each started `phases` ms (20; a comma list, taken in
//   turn) after a frame came on screen, `settleMs` (3000) apart; prints every
//   frame (when on screen and its offset from a line at rate 1, its media
//   time, the clock) and the pulses as JSON: which frame begins the lock
//   that follows each pulse (src/cadence.js rests on it).
// - `plan`: `trials` (6) runs of a plan of rates (by default 1.05 for 80 ms,
//   1 for 200, 0.95 for 40: a pulse and a smaller one back), each step for so
//   many ms or, written −n, for n frames (the rate set just after a frame's
//   callback, so n frames' durations are taken at it); every other trial
//   mirrored (2 − rate), `settleMs` (3000) apart; prints each trial's clock
//   move and its frames against the clock, mean per 200 ms from 400 ms before
//   it: how soon and where the cadence locks again, and whether it stays.

import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchBrowser } from '../e2e/support/harness.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const clientSrc = process.env.LOCKSTEP_E2E_CLIENT_SRC ?? join(root, 'src');
const [mode = 'rates', offsetArg = '12', pacedArg] = process.argv.slice(2);
/** The mean of `xs` (NaN for none). */
const mean = (/** @type {number[]} */ xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
/** The `pulses` mode's plan when none is given: [rate, ms] in turn. */
const DEFAULT_PULSES = [[1, 3000], [1.02, 250], [1, 4000], [0.98, 250], [1, 4000], [1.005, 1000], [1, 4000], [0.995, 1000], [1, 4000]];

const PAGE = `<!doctype html><video id="v" src="/demo/video.webm" muted playsinline width="320"></video>
<script type="module">
const v = document.getElementById('v');
const now = () => performance.timeOrigin + performance.now();
const frames = [];
v.requestVideoFrameCallback(function onFrame(_, m) {
  frames.push([performance.timeOrigin + m.expectedDisplayTime, m.mediaTime]);
  if (frames.length > 100) frames.shift();
  window.onFrame?.(performance.timeOrigin + m.expectedDisplayTime, m.mediaTime);
  v.requestVideoFrameCallback(onFrame);
});
// The frames' position now: the last second of frames carried to now at the element's rate, their mean.
window.shown = () => {
  const t = now();
  const recent = frames.filter((f) => f[0] >= t - 1000 && f[0] <= t);
  return recent.length < 3 ? null : recent.reduce((a, f) => a + f[1] + ((t - f[0]) / 1000) * v.playbackRate, 0) / recent.length;
};
// The same over the last \`win\` ms, each frame carried at the rates played since it was on screen.
const rateLog = [[-Infinity, v.playbackRate]];
v.addEventListener('ratechange', () => rateLog.push([now(), v.playbackRate]));
const played = (from, t) => {
  let s = 0;
  for (let i = 0; i < rateLog.length; i++) {
    const a = Math.max(from, rateLog[i][0]);
    const b = Math.min(t, i + 1 < rateLog.length ? rateLog[i + 1][0] : t);
    if (b > a) s += ((b - a) / 1000) * rateLog[i][1];
  }
  return s;
};
window.shownPlayed = (win) => {
  const t = now();
  const recent = frames.filter((f) => f[0] >= t - win && f[0] <= t);
  return recent.length < 3 ? null : recent.reduce((a, f) => a + f[1] + played(f[0], t), 0) / recent.length;
};
window.pulses = async (plan) => {
  const out = [];
  const t0 = now();
  const c0 = v.currentTime;
  for (const [rate, ms] of plan) {
    v.playbackRate = rate;
    const until = now() + ms;
    while (now() < until) {
      const s = window.shownPlayed(400);
      const t = now();
      out.push([Math.round(t - t0), rate, (v.currentTime - c0 - (t - t0) / 1000) * 1000, s === null ? null : (s - v.currentTime) * 1000]);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return out;
};
// Trials, every frame's first display logged against the line the element started on: \`trial(i, h)\` makes one,
// \`settleMs\` after the last (h: the start, sleep, the next frame's display, the clock against the wall clock).
const logged = async (n, settleMs, trial) => {
  const t0 = now();
  const c0 = v.currentTime;
  const log = [];
  const prev = window.onFrame;
  const clock = () => (v.currentTime - c0) * 1000 - (now() - t0);
  window.onFrame = (disp, m) => log.push([disp - t0, m, clock(), now() - disp]);
  const sleep = (d) => new Promise((r) => setTimeout(r, Math.max(0, d)));
  const nextFrame = () => new Promise((r) => v.requestVideoFrameCallback((_, m) => r(performance.timeOrigin + m.expectedDisplayTime)));
  const trials = [];
  for (let i = 0; i < n; i++) {
    await sleep(settleMs);
    trials.push(await trial(i, { t0, sleep, nextFrame, clock }));
  }
  await sleep(settleMs);
  window.onFrame = prev;
  return { c0: c0 * 1000, log, trials };
};
// Relock trials: a short pulse off rate 1 (alternately up and down) started mid-frame, then rate 1 again.
window.relock = (n, pulse, ms, settleMs, phases) =>
  logged(n, settleMs, async (i, { t0, sleep, nextFrame, clock }) => {
    const disp = await nextFrame();
    await sleep(disp + phases[i % phases.length] - now());
    const rate = i % 2 === 0 ? pulse : 2 - pulse;
    const clockBefore = clock();
    const start = now() - t0;
    v.playbackRate = rate;
    await sleep(start + t0 + ms - now());
    v.playbackRate = 1;
    return { rate, start, back: now() - t0, clockBefore, clockAfter: clock() };
  });
// Planned trials: each a list of [rate, ms] played in turn (then rate 1), started 20 ms after a frame came on screen,
// mirrored (2 − rate) every other trial.
window.planned = (n, plan, settleMs) =>
  logged(n, settleMs, async (i, { t0, sleep, nextFrame, clock }) => {
    const disp = await nextFrame();
    if (plan[0][1] >= 0) await sleep(disp + 20 - now());
    const start = now() - t0;
    const clockBefore = clock();
    let at = start;
    for (const [rate, ms] of plan) {
      v.playbackRate = i % 2 === 0 ? rate : 2 - rate;
      if (ms < 0) {
        // −n: for n frames (set after a frame's callback, so the durations of n frames are sampled at it).
        for (let k = 0; k < -ms; k++) await nextFrame();
        at = now() - t0;
      } else {
        at += ms;
        await sleep(at + t0 - now());
      }
    }
    v.playbackRate = 1;
    return { start, back: now() - t0, clockBefore, clockAfter: clock(), mirrored: i % 2 === 1 };
  });
window.log = [];
window.ready = v.play().then(() => new Promise((r) => setTimeout(r, 2000)));
window.rates = async (plan) => {
  for (const [rate, seconds] of plan) {
    v.playbackRate = rate;
    window.log.push({ rate });
    for (let i = 0; i < seconds * 2; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const s = window.shown();
      if (s !== null) window.log.push({ t: i / 2, framesMinusClockMs: +((s - v.currentTime) * 1000).toFixed(1) });
    }
  }
};
window.steer = async (offsetMs, pacedStartMs, seconds) => {
  const { DriftController } = await import('/src/drift.js');
  const c = new DriftController(pacedStartMs === null ? {} : { pacedStartMs });
  const t0 = now();
  const m0 = v.currentTime - offsetMs / 1000;
  const target = () => ({ position: m0 + (now() - t0) / 1000, rate: 1, paused: false, epoch: 1 });
  // A frame that asks for a step (a relock pulse's end chosen) wakes the loop, as the session steps then.
  let kick = () => {};
  window.onFrame = (at, m) => {
    if (c.frame(at, m, !v.paused, { nowMs: now(), currentTime: v.currentTime })) kick();
  };
  const out = [];
  while (now() - t0 < seconds * 1000) {
    const r = c.update({ nowMs: now(), target: target(), media: { currentTime: v.currentTime, playbackRate: v.playbackRate, paused: v.paused, readyState: v.readyState, seeking: v.seeking } });
    for (const a of r.actions) {
      if (a.type === 'setRate') v.playbackRate = a.rate;
      else if (a.type === 'seek') v.currentTime = a.position;
      else if (a.type === 'play') v.play();
      else if (a.type === 'pause') v.pause();
    }
    const s = window.shown();
    if (s !== null) out.push({ t: (now() - t0) / 1000, driftMs: (s - target().position) * 1000, rate: v.playbackRate });
    // As the session: a step every 250 ms, and when the controller asks (\`wakeAtMs\`).
    const wait = r.wakeAtMs === undefined ? 250 : Math.min(250, Math.max(0, r.wakeAtMs - now()));
    await new Promise((ok) => {
      const t = setTimeout(ok, wait);
      kick = () => {
        clearTimeout(t);
        ok(undefined);
      };
    });
  }
  return { out, rateChanges: c.corrections.rateChanges, seeks: c.corrections.seeks };
};
</script>`;

const server = createServer(async (req, res) => {
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  if (path === '/') return void res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
  const file = path.startsWith('/src/') ? normalize(join(clientSrc, path.slice(5))) : normalize(join(root, path));
  const inside = path.startsWith('/src/') ? file.startsWith(clientSrc) : path === '/demo/video.webm';
  if (!inside) return void res.writeHead(404).end();
  const data = await readFile(file).catch(() => null);
  if (!data) return void res.writeHead(404).end();
  const type = file.endsWith('.js') ? 'text/javascript' : 'video/webm';
  const range = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? '');
  if (!range) return void res.writeHead(200, { 'content-type': type, 'accept-ranges': 'bytes' }).end(data);
  const from = Number(range[1]);
  const to = range[2] ? Number(range[2]) : data.length - 1;
  res.writeHead(206, { 'content-type': type, 'content-range': `bytes ${from}-${to}/${data.length}`, 'content-length': to - from + 1 });
  res.end(data.subarray(from, to + 1));
});
await new Promise((r) => server.listen(0, '127.0.0.1', () => r(undefined)));
const browser = await launchBrowser();
try {
  const page = await browser.newPage();
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());
  await page.goto(`http://127.0.0.1:${address.port}/`);
  await page.evaluate(() => /** @type {any} */ (window).ready);
  if (mode === 'rates') {
    await page.evaluate((plan) => /** @type {any} */ (window).rates(plan), [[1, 4], [1.001, 6], [1, 3], [1.005, 5], [1, 3], [0.995, 5], [1, 3]]);
    const log = await page.evaluate(() => /** @type {any} */ (window).log);
    console.log(log.map((/** @type {any} */ e) => ('rate' in e ? `| rate ${e.rate}:` : e.framesMinusClockMs)).join(' '));
  } else if (mode === 'relock') {
    const [n, pulse, ms, settle] = [Number(process.argv[3] ?? 10), Number(process.argv[4] ?? 1.05), Number(process.argv[5] ?? 120), Number(process.argv[6] ?? 3000)];
    const phases = (process.argv[7] ?? '20').split(',').map(Number);
    const r = await page.evaluate(([a, b, c, d, e]) => /** @type {any} */ (window).relock(a, b, c, d, e), [n, pulse, ms, settle, phases]);
    // Each frame: when on screen (ms from the start), its media time, and its offset from the line the first frame
    // was on (ms, positive: later), its class (index mod 5: the 25 fps frames of a 200 ms cycle).
    const c0 = r.log[0][1] * 1000 - r.log[0][0];
    const frames = r.log.map((/** @type {number[]} */ [at, m]) => ({ at, k: ((Math.round(m * 25) % 5) + 5) % 5, off: at - (m * 1000 - c0) }));
    const within = (/** @type {number} */ a, /** @type {number} */ b) => frames.filter((f) => f.at >= a && f.at < b);
    /** @type {Record<string, number>} */
    const leads = {};
    for (const [i, t] of r.trials.entries()) {
      // Unlocked (250–900 ms after the pulse) each class has its own offset; the new lock (2.2 s on) has one of them.
      const open = [0, 1, 2, 3, 4].map((k) => mean(within(t.back + 250, t.back + 900).filter((f) => f.k === k).map((f) => f.off)));
      const locked = mean(within(t.back + 2200, t.back + 2600).map((f) => f.off));
      const began = open.map((o, k) => ({ k, err: Math.abs(o - locked) })).sort((a, b) => a.err - b.err)[0];
      const onScreen = /** @type {{at: number, k: number}} */ (frames.findLast((f) => f.at <= t.back));
      const lead = (began.k - onScreen.k + 5) % 5;
      leads[lead] = (leads[lead] ?? 0) + 1;
      console.log(
        `#${i} rate ${t.rate} back ${(t.back - onScreen.at).toFixed(1)} ms after a frame: unlocked [${open.map((o) => o.toFixed(1)).join(', ')}], locked ${locked.toFixed(2)}: class ${began.k} (±${began.err.toFixed(2)}), ${lead} frames on`,
      );
    }
    console.log(JSON.stringify({ trials: n, rate: pulse, ms, phases, leads }));
  } else if (mode === 'plan') {
    const [n, plan, settle] = [Number(process.argv[3] ?? 6), JSON.parse(process.argv[4] ?? '[[1.05, 80], [1, 200], [0.95, 40]]'), Number(process.argv[5] ?? 3000)];
    const r = await page.evaluate(([a, b, c]) => /** @type {any} */ (window).planned(a, b, c), [n, plan, settle]);
    for (const t of r.trials) {
      // Each frame's offset from the clock: when on screen less when the clock (read in its callback) reached it.
      const fr = r.log.map((/** @type {number[]} */ [at, m, clock]) => ({ at, off: at - (m * 1000 - r.c0 - clock) }));
      const bins = [];
      for (let b = -400; b < 2800; b += 200) bins.push(mean(fr.filter((f) => f.at >= t.start + b && f.at < t.start + b + 200).map((f) => f.off)));
      console.log(`${t.mirrored ? 'mirrored' : 'as given'} clock ${(t.clockAfter - t.clockBefore).toFixed(1)} ms: ${bins.map((x) => x.toFixed(1)).join(' ')}`);
    }
  } else if (mode === 'pulses') {
    const plan = process.argv[3] ? JSON.parse(process.argv[3]) : DEFAULT_PULSES;
    const out = await page.evaluate((p) => /** @type {any} */ (window).pulses(p), plan);
    for (const [t, rate, clock, framesMinusClock] of out) {
      console.log(`${String(t).padStart(6)} ms  rate ${String(rate).padEnd(6)} clock ${clock.toFixed(1).padStart(6)}  frames − clock ${framesMinusClock === null ? '—' : framesMinusClock.toFixed(1)}`);
    }
  } else {
    const paced = pacedArg === undefined ? null : Number(pacedArg);
    const r = await page.evaluate(([o, p]) => /** @type {any} */ (window).steer(o, p, 40), [Number(offsetArg), paced]);
    const every = r.out.filter((/** @type {any} */ _, /** @type {number} */ i) => i % 2 === 0);
    console.log(every.map((/** @type {any} */ x) => `${x.t.toFixed(1)}:${x.driftMs.toFixed(1)}${x.rate !== 1 ? '*' : ''}`).join(' '));
    const late = r.out.filter((/** @type {any} */ x) => x.t >= 8).map((/** @type {any} */ x) => Math.abs(x.driftMs)).sort((/** @type {number} */ a, /** @type {number} */ b) => a - b);
    const q = (/** @type {number} */ p) => late[Math.floor(p * (late.length - 1))].toFixed(2);
    console.log(JSON.stringify({ offsetMs: Number(offsetArg), pacedStartMs: paced ?? 'default', p50Ms: q(0.5), p95Ms: q(0.95), maxMs: q(1), rateChanges: r.rateChanges, seeks: r.seeks }));
  }
} finally {
  await browser.close();
  server.close();
}
