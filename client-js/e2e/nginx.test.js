// Lockstep behind Debian's real nginx, configured by deploy/nginx/lockstep.conf itself (only its ports and
// certificate paths are changed), with a Chromium page on another origin going through it: the session API
// (a cross-origin POST with its preflight) and a WebSocket session over wss://. And what the server makes
// of nginx's X-Forwarded-For: per-client limits with --trusted-proxies.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchBrowser, startLockstep, waitFor, waitUntil } from './support/harness.js';
import { serverBinary } from '../test/support/server.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..', '..');
const SITE = join(ROOT, 'deploy', 'nginx', 'lockstep.conf');
const CLIENT_SRC = join(HERE, '..', 'src');
const NGINX = existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx';
const EVENT = 'nginx-room';

/** A free TCP port on 127.0.0.1. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (s.address());
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** Resolves once `port` accepts TCP connections. */
async function listening(port) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const c = tcpConnect(port, '127.0.0.1', () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * deploy/nginx/lockstep.conf with its ports and certificate paths replaced; each replaced text must be in
 * the file exactly once, so the test fails if the shipped configuration changes shape.
 */
function site({ port, upstream, cert, key }) {
  let text = readFileSync(SITE, 'utf8');
  const swap = (from, to) => {
    assert.equal(text.split(from).length - 1, 1, `deploy/nginx/lockstep.conf should contain ${JSON.stringify(from)} once`);
    text = text.replace(from, to);
  };
  swap('listen 443 ssl http2;', `listen 127.0.0.1:${port} ssl http2;`);
  swap('listen [::]:443 ssl http2;', '');
  swap('server 127.0.0.1:8080;', `server 127.0.0.1:${upstream};`);
  swap('/etc/ssl/lockstep/fullchain.pem', cert);
  swap('/etc/ssl/lockstep/privkey.pem', key);
  return text;
}

/** An HTTPS request to nginx (its certificate is the generated one; trust is not what is tested here). */
function viaNginx(port, path, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      { host: '127.0.0.1', port, path, method, headers, rejectUnauthorized: false, servername: 'localhost' },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const PAGE = `<!doctype html><meta charset="utf-8"><title>player on another origin</title>
<script type="module">
import { connect } from '/src/index.js';
window.run = async (api, token) => {
  const out = { preflightOk: false };
  const res = await fetch(api + '/api/live-stream/session', {
    method: 'POST',
    headers: { authorization: 'Bearer ' + token, 'content-type': 'application/json' },
    body: JSON.stringify({ eventId: '${EVENT}', deviceId: 'nginx-device' }),
  });
  out.sessionStatus = res.status;
  out.session = await res.json();
  const s = await connect({ url: api, eventId: '${EVENT}', token, deviceId: 'nginx-device', transport: 'websocket' });
  window.session = s;
  out.transport = s.transport;
  out.status = s.status;
  return out;
};
window.blocked = async (api) => {
  try {
    await fetch(api + '/api/live-stream/session', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    return 'allowed';
  } catch (e) {
    return 'blocked';
  }
};
</script>`;

/** The player's site: this page and the client's modules, on its own origin. */
function pageServer() {
  return createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      return res.end(PAGE);
    }
    const file = join(CLIENT_SRC, ...path.slice('/src/'.length).split('/'));
    if (path.startsWith('/src/') && file.startsWith(CLIENT_SRC) && file.endsWith('.js') && existsSync(file)) {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      return res.end(readFileSync(file));
    }
    res.writeHead(404).end();
  });
}

const env = /** @type {any} */ ({});

before(async () => {
  env.dir = mkdtempSync(join(tmpdir(), 'lockstep-nginx-'));
  // nginx's certificate: the server's own generator (ECDSA, localhost and 127.0.0.1).
  const made = spawnSync(serverBinary(), ['cert', '--out', env.dir], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  const [pagePort, nginxPort] = [await freePort(), await freePort()];
  env.page = pageServer();
  await new Promise((r) => env.page.listen(pagePort, '127.0.0.1', r));
  env.pageOrigin = `http://localhost:${pagePort}`;
  env.api = `https://localhost:${nginxPort}`;
  env.nginxPort = nginxPort;
  env.server = await startLockstep([
    '--cors-origins', env.pageOrigin,
    '--trusted-proxies', '127.0.0.1/32,::1/128',
    '--public-url', env.api,
    '--rest-per-ip-per-sec', '1',
    '--rest-burst', '8',
  ]);
  const upstream = Number(new URL(env.server.url).port);
  const conf = join(env.dir, 'nginx.conf');
  writeFileSync(join(env.dir, 'lockstep.conf'), site({ port: nginxPort, upstream, cert: join(env.dir, 'cert.pem'), key: join(env.dir, 'key.pem') }));
  writeFileSync(
    conf,
    `worker_processes 1;
pid ${env.dir}/nginx.pid;
error_log ${env.dir}/error.log info;
events { worker_connections 256; }
http {
  access_log ${env.dir}/access.log;
  client_body_temp_path ${env.dir}/body;
  proxy_temp_path ${env.dir}/proxy;
  fastcgi_temp_path ${env.dir}/fastcgi;
  uwsgi_temp_path ${env.dir}/uwsgi;
  scgi_temp_path ${env.dir}/scgi;
  include ${env.dir}/lockstep.conf;
}
`,
  );
  const check = spawnSync(NGINX, ['-t', '-p', env.dir, '-e', `${env.dir}/error.log`, '-c', conf], { encoding: 'utf8' });
  assert.equal(check.status, 0, `nginx -t refused the configuration:\n${check.stderr}`);
  env.nginx = spawn(NGINX, ['-p', env.dir, '-e', `${env.dir}/error.log`, '-c', conf, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
  env.nginxLog = '';
  env.nginx.stderr.on('data', (c) => (env.nginxLog += c));
  await listening(nginxPort);
  env.browser = await launchBrowser();
});

after(async () => {
  await env.browser?.close();
  env.nginx?.kill('SIGQUIT');
  await env.server?.stop();
  await new Promise((r) => env.page?.close(r));
  if (env.dir) rmSync(env.dir, { recursive: true, force: true });
});

/** A dev token from the server itself (direct, not through nginx: the platform's backend would mint it). */
async function token(sub) {
  const res = await fetch(`${env.server.url}/api/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': '198.51.100.1' },
    body: JSON.stringify({ sub }),
  });
  assert.equal(res.status, 200);
  return (await res.json()).token;
}

test('a page on another origin starts a session and syncs over wss:// through nginx', async () => {
  const context = await env.browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  /** @type {{method: string, url: string}[]} */
  const requests = [];
  page.on('request', (r) => requests.push({ method: r.method(), url: r.url() }));
  await page.goto(env.pageOrigin + '/');
  await waitFor(page, () => typeof window.run === 'function', null, { what: 'the page script' });
  const out = await page.evaluate(([api, t]) => window.run(api, t), [env.api, await token('nginx-viewer')]);
  assert.equal(out.sessionStatus, 201, JSON.stringify(out.session));
  // The session API announces the public address, not the upstream one nginx used.
  assert.equal(out.session.transports.websocket.url, `${env.api.replace('https:', 'wss:')}/api/live-stream/${EVENT}`);
  assert.equal(out.transport, 'websocket');
  assert.equal(out.status, 'open');
  // The same session holds: a command goes through and comes back.
  const result = await page.evaluate(() => window.session.seek(42).then((r) => r?.outcome));
  assert.equal(result, 'applied');
  const state = await viaNginx(env.nginxPort, `/api/live-stream/${EVENT}/state`, { headers: { 'x-forwarded-for': '198.51.100.7' } });
  assert.equal(state.status, 200, state.text);
  assert.equal(JSON.parse(state.text).viewers, 1);
  await page.evaluate(() => window.session.close());
  await context.close();
  // nginx logs the upgrade (101) on the realtime path once the WebSocket has ended.
  const upgraded = new RegExp(`GET /api/live-stream/${EVENT}\\S* HTTP/1.1" 101`);
  await waitUntil(() => upgraded.test(readFileSync(join(env.dir, 'access.log'), 'utf8')), {
    what: `a 101 in nginx's access log:\n${readFileSync(join(env.dir, 'access.log'), 'utf8')}`,
  });
});

test('a page on an origin the server does not allow is refused: no CORS headers, 403 on the upgrade', async () => {
  const other = `http://127.0.0.1:${new URL(env.pageOrigin).port}`; // another origin, same page server
  const context = await env.browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(other + '/');
  await waitFor(page, () => typeof window.blocked === 'function', null, { what: 'the page script' });
  assert.equal(await page.evaluate((api) => window.blocked(api), env.api), 'blocked');
  const preflight = await viaNginx(env.nginxPort, '/api/live-stream/session', {
    method: 'OPTIONS',
    headers: { origin: other, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
  });
  assert.equal(preflight.headers['access-control-allow-origin'], undefined);
  const upgrade = await viaNginx(env.nginxPort, `/api/live-stream/${EVENT}`, {
    headers: { origin: other, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
  });
  assert.equal(upgrade.status, 403);
  await context.close();
});

test('behind nginx each client has its own limit: the server reads X-Forwarded-For from its trusted proxy', async () => {
  // An upstream balancer in front of nginx says who the client is; nginx appends its own peer.
  const burst = async (client) => {
    const statuses = [];
    for (let i = 0; i < 12; i++) {
      const r = await viaNginx(env.nginxPort, '/api/health', { headers: { 'x-forwarded-for': client } });
      statuses.push(r.status);
    }
    return statuses;
  };
  const first = await burst('203.0.113.10');
  assert.ok(first.includes(429), `one client past its burst is limited: ${first}`);
  const second = await burst('203.0.113.11');
  assert.equal(second[0], 200, `another client behind the same nginx is not: ${second}`);
});
