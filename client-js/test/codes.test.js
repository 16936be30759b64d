// The error-code table (src/codes.js) against the server's (protocol/src/code.rs):
// the `codes!` block is parsed, so the two cannot drift apart.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CODES, ERROR_CODES, DECODE_CODES, codeCloses, codeFatal, codeName } from '../src/codes.js';
import * as codec from '../src/codec.js';

const CODE_RS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'protocol', 'src', 'code.rs');

/** The entries of the `codes! { … }` invocation: `Name = 4000, false, "name";`. */
function rustCodes() {
  const src = readFileSync(CODE_RS, 'utf8');
  const start = src.indexOf('codes! {');
  assert.ok(start >= 0, 'no `codes! {` block in protocol/src/code.rs');
  const end = src.indexOf('\n}', start);
  const block = src.slice(start, end);
  const entries = [];
  for (const line of block.split('\n')) {
    const t = line.trim();
    if (t === '' || t.startsWith('//') || t === 'codes! {') continue;
    const m = /^(\w+)\s*=\s*(\d+)\s*,\s*(true|false)\s*,\s*"([a-z_]+)"\s*;$/.exec(t);
    assert.ok(m, `cannot parse this line of the codes! block: ${t}`);
    entries.push({ variant: m[1], code: Number(m[2]), closes: m[3] === 'true', name: m[4] });
  }
  return entries;
}

test('the error-code table mirrors protocol/src/code.rs (name, number, closes)', () => {
  const rust = rustCodes();
  assert.ok(rust.length >= 25, `only ${rust.length} codes parsed`);
  const fromRust = Object.fromEntries(rust.map((e) => [e.code, { name: e.name, closes: e.closes }]));
  const fromJs = Object.fromEntries(Object.entries(ERROR_CODES).map(([code, e]) => [code, { name: e.name, closes: e.closes }]));
  assert.deepEqual(fromJs, fromRust);
  assert.deepEqual(CODES, Object.fromEntries(rust.map((e) => [e.name, e.code])));
});

test('names, numbers and flags agree with each other', () => {
  for (const [name, code] of Object.entries(CODES)) {
    assert.equal(codeName(code), name);
    assert.equal(ERROR_CODES[code].name, name);
    assert.equal(codeCloses(code), ERROR_CODES[code].closes);
    // A code the client gives up on is one the server closes after.
    if (codeFatal(code)) assert.equal(codeCloses(code), true, `${name} is fatal but does not close`);
  }
  assert.deepEqual(
    Object.entries(CODES).filter(([, c]) => codeFatal(c)).map(([n]) => n),
    ['version_mismatch', 'unauthorized', 'token_expired', 'device_revoked', 'event_mismatch', 'device_limit', 'not_invited'],
  );
  assert.equal(codeName(3999), 'unknown');
  assert.equal(codeCloses(4099), false);
  assert.equal(codeFatal(4099), false);
  assert.deepEqual(DECODE_CODES, { MALFORMED: 4000, UNKNOWN_MESSAGE: 4001, FRAME_TOO_LARGE: 4002 });
  assert.ok(Object.isFrozen(CODES) && Object.isFrozen(ERROR_CODES) && Object.isFrozen(ERROR_CODES[4008]));
  // The codec module still exports the table as before.
  assert.equal(codec.ERROR_CODES, ERROR_CODES);
  assert.equal(codec.codeName, codeName);
});
