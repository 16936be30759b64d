// Starts the real Lockstep server binary for a test: builds it with cargo
// (a no-op when it is up to date; LOCKSTEP_BIN names a prebuilt one instead),
// runs it in dev mode with its own data directory on 127.0.0.1:0, and reads
// the address from its log line.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export function serverBinary() {
  if (process.env.LOCKSTEP_BIN) return process.env.LOCKSTEP_BIN;
  // Where cargo puts it: CARGO_TARGET_DIR (relative to the workspace) if set.
  const target = process.env.CARGO_TARGET_DIR ? resolve(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, 'target');
  const bin = join(target, 'debug', 'lockstep');
  {
    // May take minutes the first time (and wait for another build's lock).
    const r = spawnSync('cargo', ['build', '--bin', 'lockstep'], { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0 || !existsSync(bin)) throw new Error(`cargo build failed (status ${r.status})`);
  }
  return bin;
}

/**
 * @param {string[]} [args] extra flags
 * @returns {Promise<{url: string, proc: import('node:child_process').ChildProcess, log: string[], stop: () => Promise<void>}>}
 */
export async function startServer(args = []) {
  const bin = serverBinary();
  const help = spawnSync(bin, ['serve', '--help'], { encoding: 'utf8' }).stdout ?? '';
  // Newer servers also listen on QUIC (a fixed UDP port by default): keep tests from colliding.
  const quic = help.includes('--quic-addr') ? ['--quic-addr', '127.0.0.1:0'] : [];
  // A stopped test server closes its sessions at once (no load balancer to wait for).
  if (help.includes('--drain-ms') && !args.includes('--drain-ms')) quic.push('--drain-ms', '0');
  const dataDir = mkdtempSync(join(tmpdir(), 'lockstep-js-'));
  const proc = spawn(bin, ['serve', '--dev', '--data-dir', dataDir, '--http-addr', '127.0.0.1:0', ...quic, ...args], {
    env: { ...process.env, NO_COLOR: '1', RUST_LOG: process.env.RUST_LOG ?? 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = [];
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start:\n${log.join('')}`)), 30_000);
    const onData = (/** @type {Buffer} */ chunk) => {
      const text = chunk.toString('utf8');
      log.push(text);
      // eslint-disable-next-line no-control-regex
      const m = /listening http=(\S+)/.exec(text.replace(/\x1b\[[0-9;]*m/g, ''));
      if (m) {
        clearTimeout(timer);
        resolve(`http://${m[1]}`);
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited with ${code}:\n${log.join('')}`));
    });
  });
  const stop = () =>
    new Promise((resolve) => {
      const done = () => {
        rmSync(dataDir, { recursive: true, force: true });
        resolve(undefined);
      };
      if (proc.exitCode !== null || proc.signalCode !== null) return done();
      const kill = setTimeout(() => proc.kill('SIGKILL'), 5000);
      proc.once('exit', () => {
        clearTimeout(kill);
        done();
      });
      proc.kill('SIGTERM');
    });
  return { url, proc, log, stop };
}
