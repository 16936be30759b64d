// A throwaway certificate authority for the browser tests (the `openssl`
// CLI), and a home directory whose NSS database trusts it (`certutil`, from
// libnss3-tools): Chromium on Linux reads locally trusted roots from
// $HOME/.pki/nssdb, so a browser started with that HOME trusts the CA and the
// user's own profile is never touched. `.ci/test` installs both tools.

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** @param {string} cmd @param {string[]} args @param {string} cwd */
function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  if (r.error) throw new Error(`${cmd} is missing (.ci/test installs it: openssl, libnss3-tools): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stderr}`);
  return r.stdout;
}

/**
 * A CA (ECDSA P-256) and a server certificate it issued for localhost,
 * 127.0.0.1 and ::1, valid `days` days (PEM files; the key is PKCS#8).
 * @param {{days?: number}} [o]
 */
export function makeCa({ days = 90 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'lockstep-ca-'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  run('openssl', ['req', '-x509', '-new', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '3650', '-subj', '/CN=Lockstep e2e test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  writeFileSync(join(dir, 'leaf.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n');
  run('openssl', ['req', '-new', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=localhost'], dir);
  run('openssl', ['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'leaf.crt', '-days', String(days), '-extfile', 'leaf.ext'], dir);
  return {
    dir,
    caCert: join(dir, 'ca.crt'),
    cert: join(dir, 'leaf.crt'),
    key: join(dir, 'leaf.key'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * A fresh HOME for a browser process; with `trust`, its NSS database
 * ($HOME/.pki/nssdb) trusts that CA certificate for TLS servers.
 * @param {string | null} trust a CA certificate (PEM) or null
 */
export function browserHome(trust) {
  const home = mkdtempSync(join(tmpdir(), 'lockstep-home-'));
  const nssdb = join(home, '.pki', 'nssdb');
  mkdirSync(nssdb, { recursive: true });
  const db = `sql:${nssdb}`;
  run('certutil', ['-d', db, '-N', '--empty-password'], home);
  if (trust) {
    run('certutil', ['-d', db, '-A', '-t', 'C,,', '-n', 'lockstep-e2e-ca', '-i', trust], home);
    if (!run('certutil', ['-d', db, '-L'], home).includes('lockstep-e2e-ca')) throw new Error('the CA is not in the NSS database');
  }
  return { home, remove: () => rmSync(home, { recursive: true, force: true }) };
}
