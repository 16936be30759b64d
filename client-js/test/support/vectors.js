// Loads the golden vectors of protocol/vectors/ with a BigInt-aware JSON
// reader: integers above Number.MAX_SAFE_INTEGER become bigints (the codec's
// convention for u64 fields), every other number stays a number.

import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const VECTORS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'protocol', 'vectors');

/**
 * JSON.parse that keeps integers above 2^53 − 1 exact, as bigints.
 * @param {string} text
 */
export function parseJsonBig(text) {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else if (c === '-' || (c >= '0' && c <= '9')) {
      const m = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
      const tok = m[0];
      if (!m[1] && !m[2] && !Number.isSafeInteger(Number(tok))) out += `{"$bigint":"${tok}"}`;
      else out += tok;
      i += tok.length;
    } else {
      out += c;
      i++;
    }
  }
  return JSON.parse(out, (_k, v) => (v && typeof v === 'object' && typeof v.$bigint === 'string' ? BigInt(v.$bigint) : v));
}

/** @param {string} rel */
export function load(rel) {
  return parseJsonBig(readFileSync(join(VECTORS, rel), 'utf8'));
}

/** Every message vector: {dir: 'client'|'server', file, name, hex, value}. */
export function messageVectors() {
  const all = [];
  for (const dir of ['client', 'server']) {
    for (const file of readdirSync(join(VECTORS, dir)).filter((f) => f.endsWith('.json')).sort()) {
      for (const v of load(`${dir}/${file}`)) all.push({ dir, file, ...v });
    }
  }
  return all;
}
