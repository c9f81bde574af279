// Times a target page in headless Chromium: from the navigation's start to its chart laid out
// (the `data-drawn-ms` app.js sets on each chart), per range, and the bytes the page loaded.
// Speaks WebDriver to chromedriver with plain fetch() (no npm packages), as web-e2e.mjs does.
// Run by scripts/bench-target-range.sh against a daemon whose password is set:
//   node chart-timing.mjs --url URL --password PASSWORD --target NAME [--passes N]
// Prints one line per range and pass: drawn_ms, the history request's time and end, and the
// bytes of the page (HTML), its JS and CSS, and its API answers (bodies as sent, uncompressed
// here).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 && fallback === undefined) throw new Error(`--${name} is required`);
  return i < 0 ? fallback : process.argv[i + 1];
};
const URL_ = arg('url');
const PASSWORD = arg('password');
const TARGET = arg('target');
const PASSES = Number(arg('passes', '2'));
const RANGES = ['1h', '24h', '7d', '30d'];
const PASS_NAMES = ['first', 'second', 'third'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const freePort = () => new Promise((resolve, reject) => {
  const srv = createServer();
  srv.on('error', reject);
  srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
});

let driverUrl;
let sid;
async function wd(method, path, body) {
  const r = await fetch(`${driverUrl}${path}`, {
    method,
    headers: { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(60000),
  });
  const data = await r.json();
  if (!r.ok) throw new Error(`WebDriver ${method} ${path}: ${JSON.stringify(data.value).slice(0, 400)}`);
  return data.value;
}
const s = (path) => `/session/${sid}${path}`;
const exec = (script, ...args) => wd('POST', s('/execute/sync'), { script, args });

async function waitFor(what, fn, timeoutMs) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { last = e; }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

// What one load of the page took, read in the page once its chart is drawn.
const MEASURE = `
  const chart = document.querySelector('svg.smoke[data-drawn-ms]');
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  const sum = (f) => res.filter(f).reduce((n, r) => n + r.encodedBodySize, 0);
  const history = res.find((r) => r.name.includes('/history?'));
  return {
    drawn_ms: Number(chart.dataset.drawnMs),
    buckets: chart.querySelectorAll('g.pt').length,
    history_ms: history ? Math.round(history.duration * 10) / 10 : null,
    // The history's answer received (ms from the navigation's start): drawn_ms less this is
    // the page's own work on it (building the chart and laying it out).
    history_end_ms: history ? Math.round(history.responseEnd) : null,
    html_bytes: nav.encodedBodySize,
    js_css_bytes: sum((r) => /\\.(js|css)(\\?|$)/.test(new URL(r.name).pathname)),
    api_bytes: sum((r) => new URL(r.name).pathname.startsWith('/api/')),
    transferred_bytes: nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0),
  };`;

async function main() {
  const profile = mkdtempSync(join(tmpdir(), 'vantage-chromium-'));
  const port = await freePort();
  driverUrl = `http://127.0.0.1:${port}`;
  const driver = spawn('chromedriver', [`--port=${port}`], { stdio: 'ignore' });
  try {
    await waitFor('chromedriver', async () => (await wd('GET', '/status')).ready, 20000);
    const session = await wd('POST', '/session', {
      capabilities: {
        alwaysMatch: {
          browserName: 'chrome',
          'goog:chromeOptions': {
            binary: '/usr/bin/chromium',
            args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
              '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
              '--disable-dev-shm-usage', `--user-data-dir=${profile}`, '--window-size=1280,900'],
          },
        },
      },
    });
    sid = session.sessionId;
    await wd('POST', s('/timeouts'), { implicit: 0, pageLoad: 60000, script: 60000 });
    await wd('POST', s('/url'), { url: `${URL_}/` });
    const login = await wd('POST', s('/execute/async'), {
      script: `const done = arguments[arguments.length - 1];
        fetch('/api/auth/login', { method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ password: arguments[0] }) }).then((r) => done(r.status), (e) => done(String(e)));`,
      args: [PASSWORD],
    });
    if (login !== 200) throw new Error(`login: ${login}`);
    for (const range of RANGES) {
      for (let pass = 0; pass < PASSES; pass++) {
        // A new document each time (the query differs), so the timing starts at a navigation.
        const url = `${URL_}/?load=${range}-${pass}#/targets/${encodeURIComponent(TARGET)}/${range}`;
        await wd('POST', s('/url'), { url });
        await waitFor(`the ${range} chart`, () => exec("return document.querySelector('svg.smoke[data-drawn-ms]') !== null"), 60000);
        const m = await exec(MEASURE);
        const fields = Object.entries(m).map(([k, v]) => `${k}=${v}`).join(' ');
        console.log(`range=${range} pass=${PASS_NAMES[pass] || pass + 1} ${fields}`);
      }
    }
    await wd('DELETE', s(''));
  } finally {
    driver.kill();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(`chart-timing: ${e.message}`); process.exit(1); });
