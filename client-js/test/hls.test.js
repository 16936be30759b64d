// lockstep-client/hls: the adapters against playlists parsed by hls.js's own
// parser (realistic LevelDetails: fragments with start, duration and program
// date time), reloaded with a sliding window as hls.js merges them, and the
// hls.js options checked by hls.js itself.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Hls, { M3U8Parser } from 'hls.js';
import { hlsJsAdapter, hlsJsConfig, nativeHlsAdapter } from '../src/hls.js';

const T0 = Date.UTC(2026, 8, 1, 12, 0, 0); // program date time of segment 100

/**
 * A live media playlist of `n` 2 s segments from media sequence `seq`, with
 * EXT-X-PROGRAM-DATE-TIME on its first segment (hls.js carries it on to the
 * others) unless `pdt` is false; `gapAfter`: a discontinuity after that
 * sequence number, the program date time jumping 60 s forward there.
 */
function playlist(seq, n, { pdt = true, gapAfter = -1 } = {}) {
  let s = `#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:${seq}\n`;
  for (let sn = seq; sn < seq + n; sn++) {
    if (sn === gapAfter + 1) s += `#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:${new Date(pdtOf(sn, gapAfter)).toISOString()}\n`;
    else if (sn === seq && pdt) s += `#EXT-X-PROGRAM-DATE-TIME:${new Date(pdtOf(sn, gapAfter)).toISOString()}\n`;
    s += `#EXTINF:2.000,\nseg${sn}.ts\n`;
  }
  return s;
}

/** The program date time of segment `sn` (60 s later after a gap). */
function pdtOf(sn, gapAfter = -1) {
  return T0 + (sn - 100) * 2000 + (gapAfter >= 0 && sn > gapAfter ? 60_000 : 0);
}

/**
 * Parses a playlist as hls.js does, then places its fragments on the media
 * timeline as hls.js's merge of a reload does: a fragment already known keeps
 * its start, a new one follows the one before it; the first playlist starts
 * at `firstStart` (where hls.js found the first fragment's timestamps).
 */
function load(text, previous = null, firstStart = 10) {
  const d = M3U8Parser.parseLevelPlaylist(text, 'https://cdn.example/live.m3u8', 0, 'level', 0, null);
  const known = new Map((previous?.fragments ?? []).map((f) => [f.sn, f.start]));
  let next = null;
  for (const f of d.fragments) {
    f.start = known.get(f.sn) ?? next ?? firstStart;
    next = f.start + f.duration;
  }
  return d;
}

test('hls.js parses the test playlists as expected (program date times carried to every segment)', () => {
  const d = load(playlist(100, 5));
  assert.deepEqual(
    d.fragments.map((f) => [f.sn, f.start, f.duration, f.programDateTime]),
    [100, 101, 102, 103, 104].map((sn, i) => [sn, 10 + 2 * i, 2, pdtOf(sn)]),
  );
  assert.equal(d.live, true);
});

test('hlsJsAdapter: null until a playlist is loaded (a fake, and a real Hls that loaded nothing)', () => {
  const fake = { latestLevelDetails: null };
  const a = hlsJsAdapter(fake);
  assert.equal(a.toProgramTime(12), null);
  assert.equal(a.toMediaTime(T0), null);
  assert.equal(a.liveEdge(), null);
  const hls = new Hls(hlsJsConfig);
  try {
    const b = hlsJsAdapter(hls);
    assert.deepEqual([b.toProgramTime(0), b.toMediaTime(T0), b.liveEdge()], [null, null, null]);
  } finally {
    hls.destroy();
  }
  assert.throws(() => hlsJsAdapter(/** @type {any} */ (undefined)), TypeError);
});

test("hlsJsAdapter: element time ↔ program time through the fragments' start and program date time; the live edge is the newest fragment's end", () => {
  const hls = { latestLevelDetails: load(playlist(100, 5)) };
  const a = hlsJsAdapter(hls);
  assert.equal(a.toProgramTime(10), T0);
  assert.equal(a.toProgramTime(13.5), T0 + 3500);
  assert.equal(a.toProgramTime(19.999), T0 + 9999);
  assert.equal(a.toMediaTime(T0 + 3500), 13.5);
  assert.equal(a.toMediaTime(T0), 10);
  for (const t of [10, 11.25, 14, 17.9]) assert.ok(Math.abs(/** @type {number} */ (a.toMediaTime(/** @type {number} */ (a.toProgramTime(t)))) - t) < 1e-9);
  assert.equal(a.liveEdge(), T0 + 10_000);
  // Past the newest fragment (where the room may be ahead of this viewer): extrapolated.
  assert.equal(a.toMediaTime(T0 + 12_000), 22);
  assert.equal(a.toProgramTime(21), T0 + 11_000);
  assert.equal(a.toProgramTime(NaN), null);
  assert.equal(a.toMediaTime(Infinity), null);
});

test('hlsJsAdapter: playlist reloads slide the window; the newest playlist is read at every call, older times extrapolate from its first fragment', () => {
  const hls = { latestLevelDetails: load(playlist(100, 5)) };
  const a = hlsJsAdapter(hls);
  const before = [a.toProgramTime(15), a.liveEdge()];
  // Two reloads: 100–104 → 102–106 → 105–109 (segments leave at the front, arrive at the end).
  hls.latestLevelDetails = load(playlist(102, 5), hls.latestLevelDetails);
  assert.deepEqual(
    hls.latestLevelDetails.fragments.map((f) => [f.sn, f.start]),
    [102, 103, 104, 105, 106].map((sn) => [sn, 10 + (sn - 100) * 2]),
  );
  assert.equal(a.toProgramTime(15), before[0], 'the same frame keeps its program time');
  assert.equal(a.liveEdge(), /** @type {number} */ (before[1]) + 4000);
  hls.latestLevelDetails = load(playlist(105, 5), hls.latestLevelDetails);
  assert.equal(a.liveEdge(), pdtOf(109) + 2000);
  assert.equal(a.toMediaTime(pdtOf(107) + 500), 24.5);
  // 15 s is no longer in the window (its first fragment starts at 20 s): extrapolated from the first.
  assert.equal(a.toProgramTime(15), before[0]);
  assert.equal(a.toMediaTime(T0 + 1000), 11);
});

test('hlsJsAdapter: across a discontinuity with a jump in program date time, each side maps through its own fragments; a time in the gap maps to the first frame after it', () => {
  const hls = { latestLevelDetails: load(playlist(100, 6, { gapAfter: 102 })) };
  assert.deepEqual(
    hls.latestLevelDetails.fragments.map((f) => f.programDateTime),
    [100, 101, 102, 103, 104, 105].map((sn) => pdtOf(sn, 102)),
  );
  const a = hlsJsAdapter(hls);
  assert.equal(a.toProgramTime(15), pdtOf(102) + 1000);
  assert.equal(a.toProgramTime(17), pdtOf(103, 102) + 1000);
  assert.equal(a.toMediaTime(pdtOf(103, 102) + 1000), 17);
  assert.equal(a.toMediaTime(pdtOf(102) + 1999), 15.999);
  // Program time that no frame has (the 60 s jump): the first frame after it.
  assert.equal(a.toMediaTime(pdtOf(102) + 30_000), 16);
  assert.equal(a.liveEdge(), pdtOf(105, 102) + 2000);
});

test('hlsJsAdapter: a playlist without EXT-X-PROGRAM-DATE-TIME gives no mapping', () => {
  const a = hlsJsAdapter({ latestLevelDetails: load(playlist(100, 5, { pdt: false })) });
  assert.deepEqual([a.toProgramTime(12), a.toMediaTime(T0), a.liveEdge()], [null, null, null]);
});

test('hlsJsAdapter: hls.js before 1.6 (no latestLevelDetails): the playing level, else the loading one', () => {
  const d0 = load(playlist(100, 5));
  const d1 = load(playlist(101, 5), d0);
  const hls = { levels: [{ details: d0 }, { details: d1 }], currentLevel: -1, loadLevel: 1 };
  const a = hlsJsAdapter(hls);
  assert.equal(a.liveEdge(), pdtOf(105) + 2000, 'the loading level before anything plays');
  hls.currentLevel = 0;
  assert.equal(a.liveEdge(), pdtOf(104) + 2000);
});

test('nativeHlsAdapter: getStartDate() is program time of element time 0; the live edge is the end of the seekable range', () => {
  const video = {
    start: new Date(T0),
    getStartDate() {
      return this.start;
    },
    seekable: { length: 1, start: () => 4, end: () => 64.5 },
  };
  const a = nativeHlsAdapter(/** @type {any} */ (video));
  assert.equal(a.toProgramTime(12.25), T0 + 12_250);
  assert.equal(a.toMediaTime(T0 + 12_250), 12.25);
  assert.equal(a.liveEdge(), T0 + 64_500);
  video.seekable = { length: 0, start: () => 0, end: () => 0 };
  assert.equal(a.liveEdge(), null);
  video.start = new Date(NaN); // Safari before the playlist (or without program date times)
  assert.deepEqual([a.toProgramTime(1), a.toMediaTime(T0), a.liveEdge()], [null, null, null]);
  const chrome = nativeHlsAdapter(/** @type {any} */ ({ seekable: { length: 0 } }));
  assert.deepEqual([chrome.toProgramTime(1), chrome.toMediaTime(T0), chrome.liveEdge()], [null, null, null]);
  assert.throws(() => nativeHlsAdapter(/** @type {any} */ (null)), TypeError);
});

test('hlsJsConfig: hls.js accepts it (its own checks), keeps every value, and refuses a mix with liveSyncDuration as documented', () => {
  assert.ok(Object.isFrozen(hlsJsConfig));
  const hls = new Hls(hlsJsConfig);
  try {
    for (const [k, v] of Object.entries(hlsJsConfig)) assert.equal(hls.config[k], v, k);
    // hls.js's latency controller changes the rate only above 1, and jumps only beyond a finite max latency.
    assert.equal(hls.config.maxLiveSyncPlaybackRate, 1);
    assert.equal(hls.config.liveMaxLatencyDuration, undefined);
    assert.equal(hls.config.liveMaxLatencyDurationCount, Infinity);
    assert.equal(hls.config.startPosition, -1);
  } finally {
    hls.destroy();
  }
  const mine = new Hls({ ...hlsJsConfig, maxBufferLength: 20 });
  assert.equal(mine.config.maxBufferLength, 20);
  mine.destroy();
  assert.throws(() => new Hls({ ...hlsJsConfig, liveSyncDuration: 3 }), /don't mix up/);
});

test("the declared types of lockstep-client/hls accept hls.js's own Hls and element", () => {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const dir = mkdtempSync(join(tmpdir(), 'lockstep-hls-types-'));
  try {
    const file = join(dir, 'check.ts');
    writeFileSync(
      file,
      [
        `import Hls from ${JSON.stringify(join(root, 'node_modules/hls.js/dist/hls.mjs'))};`,
        `import { hlsJsAdapter, hlsJsConfig, nativeHlsAdapter } from ${JSON.stringify(join(root, 'src/hls.js'))};`,
        `import type { LiveAdapter } from ${JSON.stringify(join(root, 'src/types.js'))};`,
        'declare const video: HTMLVideoElement;',
        'const hls = new Hls({ ...hlsJsConfig });',
        'const a: LiveAdapter = hlsJsAdapter(hls);',
        'const b: LiveAdapter = nativeHlsAdapter(video);',
        'export { a, b };',
      ].join('\n'),
    );
    const tsc = join(root, 'node_modules/typescript/bin/tsc');
    const args = [tsc, '--noEmit', '--strict', '--allowJs', '--checkJs', '--skipLibCheck', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--lib', 'es2022,dom', file];
    const r = spawnSync(process.execPath, args, { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
