// How far a page is from the room right after scheduled plays, in headless
// Chromium on the demo page (a measurement for BENCHMARKS.md, not a test).
//
//   LOCKSTEP_BIN=target/debug/lockstep node scripts/start-probe.mjs [plays]
//
// Two pages join a room; the host plays and pauses `plays` times (6). For
// each play the viewer samples its element against the room's position every
// 10 ms from the moment the play takes effect, and the script prints the
// largest |drift| between 50 and 250 ms after it, with the start-up latency
// the client has learned (stats.startLatencyMs; null for a client without it,
// e.g. with LOCKSTEP_E2E_EMBEDDED_CLIENT=1 and an older binary).

import { eventId, launchBrowser, openWatch, startLockstep } from '../e2e/support/harness.js';

const plays = Number(process.argv[2] ?? 6);
const server = await startLockstep([]);
const browser = await launchBrowser();
try {
  const ev = eventId('start-probe');
  const host = await openWatch(browser, `${server.url}/watch/${ev}`);
  const viewer = await openWatch(browser, `${server.url}/watch/${ev}`);
  const out = [];
  for (let i = 0; i < plays; i++) {
    await host.click('#play');
    const r = await viewer.evaluate(async () => {
      const s = lockstepDemo.session;
      const v = lockstepDemo.video;
      const res = [];
      const t0 = performance.now();
      let started = null;
      while (performance.now() - t0 < 1500) {
        if (!s.timeline?.paused && started === null) started = performance.now();
        if (started !== null) res.push([performance.now() - started, (v.currentTime - s.position) * 1000]);
        await new Promise((ok) => setTimeout(ok, 10));
      }
      return { res, startLatencyMs: s.stats.startLatencyMs ?? null };
    });
    const win = r.res.filter(([t]) => t >= 50 && t <= 250).map(([, d]) => Math.abs(d));
    out.push({ play: i + 1, maxAbsDriftMs: +Math.max(...win).toFixed(1), startLatencyMs: r.startLatencyMs === null ? null : +r.startLatencyMs.toFixed(1) });
    await host.click('#pause');
    await new Promise((ok) => setTimeout(ok, 1200));
  }
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
  await server.stop();
}
