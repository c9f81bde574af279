// Browser end-to-end test of the Vantage page, speaking WebDriver to chromedriver with plain
// fetch() (no npm packages). Run by scripts/tests.d/50-web-e2e.sh inside a network namespace.
//   node web-e2e.mjs --url URL --artifacts DIR --data-dir DIR --peer ADDRESS
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const arg = (name) => {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) throw new Error(`--${name} is required`);
  return process.argv[i + 1];
};
const URL_ = arg('url');
const ART = arg('artifacts');
const DATA = arg('data-dir');
const PEER = arg('peer');
const PASSWORD = 'e2e password, long enough';
const DRIVER_PORT = 9515;
const DRIVER = `http://127.0.0.1:${DRIVER_PORT}`;
const ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';

let passed = 0;
let failed = 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function wd(method, path, body) {
  const r = await fetch(`${DRIVER}${path}`, {
    method,
    headers: { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(60000),
  });
  const data = await r.json();
  if (!r.ok) throw new Error(`WebDriver ${method} ${path}: ${JSON.stringify(data.value).slice(0, 400)}`);
  return data.value;
}

let sid;
const s = (path) => `/session/${sid}${path}`;
const find = async (css) => (await wd('POST', s('/element'), { using: 'css selector', value: css }))[ELEMENT];
const exec = (script, ...args) => wd('POST', s('/execute/sync'), { script, args });

async function waitFor(what, fn, timeoutMs = 15000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { last = e; }
    await sleep(150);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

const waitCss = (css, timeoutMs) => waitFor(css, () => exec('return document.querySelector(arguments[0]) !== null', css), timeoutMs);

async function type(css, text) {
  const el = await find(css);
  await wd('POST', s(`/element/${el}/clear`), {});
  await wd('POST', s(`/element/${el}/value`), { text });
}

async function click(css) {
  const el = await find(css);
  await wd('POST', s(`/element/${el}/click`), {});
}

async function shot(name) {
  const png = await wd('GET', s('/screenshot'));
  writeFileSync(join(ART, `web-${name}.png`), Buffer.from(png, 'base64'));
}

async function step(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.message}`);
    try { await shot(`FAILED-${name.replace(/\W+/g, '-')}`); } catch (_) { /* no session */ }
  }
}

const configText = () => readFileSync(join(DATA, 'vantage.toml'), 'utf8');

async function main() {
  const profile = mkdtempSync(join(tmpdir(), 'vantage-chromium-'));
  const driver = spawn('chromedriver', [`--port=${DRIVER_PORT}`], { stdio: 'ignore' });
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
              '--disable-dev-shm-usage', '--ignore-certificate-errors', `--user-data-dir=${profile}`, '--window-size=1280,900'],
          },
        },
      },
    });
    sid = session.sessionId;
    await wd('POST', s('/timeouts'), { implicit: 0, pageLoad: 20000, script: 20000 });

    await step('fresh device shows the password page', async () => {
      await wd('POST', s('/url'), { url: URL_ });
      await waitCss('#f-confirm');
      const text = await exec('return document.body.innerText');
      if (!/no admin password yet/.test(text)) throw new Error(text);
      await shot('01-first-boot');
    });

    await step('a too-short password is refused next to the field', async () => {
      await type('#f-password', 'short');
      await type('#f-confirm', 'short');
      await click('button[type=submit]');
      await waitFor('field error', () => exec("return document.querySelector('.ferr[data-for=password]').textContent"));
    });

    await step('set the admin password', async () => {
      await type('#f-password', PASSWORD);
      await type('#f-confirm', PASSWORD);
      await click('button[type=submit]');
      await waitCss('section.grid article.target');
      await waitFor('loopback targets up', () => exec("return document.querySelectorAll('article.target.up').length >= 1"), 20000);
      if (!existsSync(join(DATA, 'web', 'admin.json'))) throw new Error('no admin.json');
      await shot('02-status-default');
    });

    await step('log out and log in again', async () => {
      await click('#logout');
      await waitCss('#f-password');
      await shot('03-login');
      await type('#f-password', 'wrong password');
      await click('button[type=submit]');
      await waitFor('login error', () => exec("return /wrong password/.test(document.body.innerText)"));
      await type('#f-password', PASSWORD);
      await click('button[type=submit]');
      await waitCss('section.grid');
    });

    await step('add a target, test it now, save it', async () => {
      await wd('POST', s('/url'), { url: `${URL_}#/targets` });
      await waitCss('#add-target');
      await click('#add-target');
      await waitCss('#target-form');
      await type('#f-name', 'peer');
      await type('#f-host', `${PEER}; reboot`);
      await click('#save');
      await waitFor('host error', () => exec("return document.querySelector('.ferr[data-for=host]').textContent"));
      await type('#f-host', PEER);
      await type('#f-ping-packets', '2');
      await type('#f-interval', '1s');
      await click('#test-now');
      await waitCss('#test-result .result.ok', 15000);
      await shot('04-test-now');
      await click('#save');
      await waitCss('tr[data-target=peer]');
      if (!/name = "peer"/.test(configText())) throw new Error('not saved to the file');
      if (!existsSync(join(DATA, 'vantage.toml.bak')) && !/loopback-v4/.test(configText())) throw new Error('embedded config lost');
      await shot('05-targets');
    });

    await step('the new target turns green on the status page', async () => {
      await wd('POST', s('/url'), { url: `${URL_}#/status` });
      await waitFor('peer up', () => exec("const a = document.querySelector('article[data-target=peer]'); return a && a.classList.contains('up')"), 20000);
      await sleep(1500);
      await shot('06-status-green-desktop');
      await wd('POST', s('/window/rect'), { width: 390, height: 844 });
      await sleep(300);
      const overflow = await exec('return document.documentElement.scrollWidth > window.innerWidth + 1');
      await shot('07-status-phone');
      if (overflow) throw new Error('the page is wider than a phone screen');
    });

    await step('edit the target (server-side validation shown next to the field)', async () => {
      await wd('POST', s('/url'), { url: `${URL_}#/targets/peer/edit` });
      await waitCss('#target-form');
      await type('#f-ping-spacing', '900ms');
      await type('#f-ping-packets', '3');
      await click('#save');
      await waitFor('server error on ping.packets', () => exec("return document.querySelector('.ferr[data-for=\"ping.packets\"]').textContent"));
      await wd('POST', s('/window/rect'), { width: 1280, height: 900 });
      await shot('08-edit-validation');
      await type('#f-ping-spacing', '100ms');
      await type('#f-name', 'peer-renamed');
      await click('#save');
      await waitCss('tr[data-target=peer-renamed]');
      const text = configText();
      if (!/name = "peer-renamed"/.test(text) || !/packets = 3/.test(text)) throw new Error(text);
    });

    await step('hand edits are shown, and the edited target stays green', async () => {
      await wd('POST', s('/url'), { url: `${URL_}#/status` });
      await waitFor('renamed up', () => exec("const a = document.querySelector('article[data-target=peer-renamed]'); return a && a.classList.contains('up')"), 20000);
      writeFileSync(join(DATA, 'vantage.toml'), configText().replace('name = "loopback-v6"', 'name = "loopback-six"'));
      await wd('POST', s('/url'), { url: `${URL_}#/targets` });
      await waitFor('hand-edit banner', () => exec("return /edited by hand/.test(document.body.innerText)"));
      await shot('09-hand-edit');
      await click('.banner button');
      // Applied: the banner goes and the row shows the running (effective) interval.
      await waitFor('file applied', () => exec("return !/edited by hand/.test(document.body.innerText) && /ping 1s/.test(document.querySelector('tr[data-target=loopback-six]').innerText)"));
    });

    await step('delete the target', async () => {
      await click('button[data-delete=peer-renamed]');
      await waitFor('confirm dialog', () => wd('GET', s('/alert/text')));
      await wd('POST', s('/alert/accept'), {});
      await waitFor('row gone', () => exec("return document.querySelector('tr[data-target=peer-renamed]') === null && document.querySelector('tr[data-target=loopback-six]') !== null"));
      if (/peer-renamed/.test(configText())) throw new Error('still in the file');
      await shot('10-deleted');
    });

    await step('settings page: add a remote_write endpoint (checked as typed, secret kept off the page)', async () => {
      await wd('POST', s('/url'), { url: `${URL_}#/settings` });
      await waitCss('#rw-add');
      await click('#rw-add');
      await waitCss('#rw-form');
      await type('#f-url', 'ftp://192.0.2.2/write');
      await exec("document.getElementById('f-url').dispatchEvent(new Event('change', { bubbles: true }))");
      // The dry run's message, the same as `vantage check-config` gives.
      await waitFor('live URL error', () => exec("return /must start with http:\\/\\/ or https:\\/\\//.test(document.querySelector('.ferr[data-for=url]').textContent)"));
      await type('#f-url', 'http://192.0.2.2:9/api/v1/write');
      await type('#f-name', 'central');
      await exec("const m = document.getElementById('f-auth'); m.value = 'bearer'; m.dispatchEvent(new Event('change', { bubbles: true }))");
      await type('#f-bearer_token', 'e2e-token-0123456789');
      await type('#f-labels', 'site=lab');
      await shot('17-remote-write-form');
      await click('#rw-save');
      await waitCss('tr[data-endpoint=central]');
      const text = configText();
      if (!/\[\[remote_write\]\]\nname = "central"\nurl = "http:\/\/192\.0\.2\.2:9\/api\/v1\/write"\nbearer_token = "e2e-token-0123456789"/.test(text)) throw new Error(text);
      await waitCss('pre.file');
      const shown = await exec('return document.body.innerText');
      if (shown.includes('e2e-token')) throw new Error('the page shows the token');
      if (!/bearer_token = "<secret>"/.test(shown)) throw new Error('the file viewer does not mask the token');
      await shot('18-remote-write-saved');
    });

    await step('edit the endpoint: the masked token is kept, the change reaches the file', async () => {
      await click('button[data-rw-edit=central]');
      await waitCss('#rw-form');
      if (await exec("return document.getElementById('f-bearer_token').value") !== '') throw new Error('the token was sent to the page');
      await type('#f-timeout', '7s');
      await click('#rw-save');
      await waitFor('timeout saved', () => /timeout = "7s"/.test(configText()));
      if (!/bearer_token = "e2e-token-0123456789"/.test(configText())) throw new Error(`token lost:\n${configText()}`);
      await waitCss('tr[data-endpoint=central]');
    });

    await step('store limits: refused next to the field, then saved with a restart notice', async () => {
      await waitCss('#store-form');
      await type('#f-store-max_size', '1KiB');
      await click('#store-save');
      await waitFor('max_size error', () => exec("return /out of range/.test(document.querySelector('.ferr[data-for=\"store.max_size\"]').textContent)"));
      await type('#f-store-max_size', '64MiB');
      await click('#store-save');
      await waitCss('[data-restart="[store]"]');
      if (!/\[store\]\nmax_size = "64MiB"/.test(configText())) throw new Error(configText());
      await shot('19-store-restart');
    });

    await step('LEDs: a bad pin is refused next to its field, a good layout saved for the next start', async () => {
      await waitCss('#leds-form');
      await exec("const b = document.getElementById('f-leds-backend'); b.value = 'gpio'; b.dispatchEvent(new Event('change', { bubbles: true }))");
      await click('#led-add');
      await waitCss('#f-leds-led-0--pin');
      await type('#f-leds-led-0--pin', '99');
      await click('#leds-save');
      await waitFor('pin error', () => exec("return /99/.test(document.querySelector('.ferr[data-for=\"leds.led[0].pin\"]').textContent)"));
      await type('#f-leds-led-0--pin', '17');
      await click('#leds-save');
      await waitCss('[data-restart="[leds]"]');
      if (!/\[leds\]\nbackend = "gpio"\n\n\[\[leds\.led\]\]\nrole = "health"\npin = 17/.test(configText())) throw new Error(configText());
      await shot('20-leds');
    });

    await step('settings page: turn HTTPS on', async () => {
      await wd('POST', s('/url'), { url: `${URL_}#/settings` });
      await waitCss('pre.file');
      await type('#f-https_listen', '127.0.0.1:9443');
      await exec("document.getElementById('f-https_listen').form.requestSubmit()");
      await waitFor('HTTPS on', () => exec("return /Serving HTTPS on 127.0.0.1:9443/.test(document.body.innerText)"));
      await shot('11-settings');
    });

    await step('the page over HTTPS (self-signed certificate)', async () => {
      await wd('POST', s('/url'), { url: 'https://127.0.0.1:9443/' });
      await waitFor('page over HTTPS', () => exec('return document.title'), 10000);
      // Cookies are per host, not per port: the session from plain HTTP carries over.
      await waitCss('section.grid');
      if (!(await exec("return location.protocol === 'https:'"))) throw new Error('not on HTTPS');
      await shot('15-status-https');
      await wd('POST', s('/url'), { url: URL_ });
    });

    await step('the form shows DNS options when the dns probe is chosen', async () => {
      await wd('POST', s('/url'), { url: `${URL_}#/targets/new` });
      await waitCss('#target-form');
      if (!(await exec("return document.getElementById('dns-options').hidden"))) throw new Error('DNS options shown for ping');
      await click('input[value=dns]');
      await waitFor('DNS options', () => exec("return !document.getElementById('dns-options').hidden"));
      await click('input[value=ping]');
      await waitFor('ping options hidden', () => exec("return document.getElementById('ping-options').hidden"));
      await shot('16-form-dns');
    });

    await step('a trace target is added from the page, with the options the daemon describes', async () => {
      // A fresh form (the step before left one with its own choices).
      await wd('POST', s('/url'), { url: `${URL_}#/targets` });
      await waitCss('#add-target');
      await click('#add-target');
      await waitCss('#target-form');
      if (!(await exec("return document.getElementById('trace-options').hidden"))) throw new Error('trace options shown for ping');
      await click('input[value=ping]');
      await click('input[value=trace]');
      await waitFor('only trace chosen', () => exec("return [...document.querySelectorAll('#target-form input[type=checkbox]:checked')].map((c) => c.value).join() === 'trace'"));
      await waitFor('trace options', () => exec("return !document.getElementById('trace-options').hidden"));
      await type('#f-name', 'path');
      await type('#f-host', PEER);
      await type('#f-trace-flows', '99');
      await click('#save');
      await waitFor('range refused next to the field', () => exec("return /between 1 and 16/.test(document.querySelector('.ferr[data-for=\"trace.flows\"]').textContent)"));
      await type('#f-trace-flows', '2');
      await type('#f-trace-max_hops', '8');
      await exec("const p = document.getElementById('f-trace-protocol'); p.value = 'icmp'; p.dispatchEvent(new Event('change')); return true");
      await click('#test-now');
      await waitCss('#test-result .result', 20000);
      await shot('17-form-trace');
      await click('#save');
      await waitCss('tr[data-target=path]');
      const text = configText();
      if (!/flows = 2/.test(text) || !/protocol = "icmp"/.test(text) || !/max_hops = 8/.test(text)) throw new Error(`trace options not saved:\n${text}`);
    });

    // The chart's points against the API: every bucket the chart drew, by its start, with the
    // API's median, loss and rounds (buckets still filling may have moved on in between).
    const compare = (pts, api, probe) => {
      if (!pts.length) throw new Error(`${probe}: no points drawn`);
      const closed = Math.floor(Date.now() / 1000 / api.step_seconds) * api.step_seconds - api.step_seconds;
      const byT = new Map(api.points.map((p) => [String(p.t), p]));
      let checked = 0;
      for (const d of pts) {
        const p = byT.get(d.t);
        if (!p) throw new Error(`${probe}: the chart has a point at ${d.t} the API does not`);
        if (Number(d.t) >= closed) continue;
        const same = (a, b) => (a === '' && b === null) || Math.abs(Number(a) - b) < 1e-9;
        if (!same(d.median, p.median_ms) || !same(d.loss, p.loss) || Number(d.rounds) !== p.rounds) {
          throw new Error(`${probe} point ${d.t}: chart ${JSON.stringify(d)} against API ${JSON.stringify(p)}`);
        }
        checked++;
      }
      return checked;
    };

    // The page of `name`, at 1 h, re-read (the range button) until `done(chart points, API)` holds.
    const targetPage = async (name, probe, done, timeoutMs) => {
      await wd('POST', s('/url'), { url: `${URL_}#/targets/${name}` });
      await waitFor(`${name}'s page`, () => exec('return document.querySelector("main h1") && document.querySelector("main h1").textContent === arguments[0]', name));
      let last;
      await waitFor(`${name}: ${probe} chart`, async () => {
        await exec('const h = document.querySelector("main h1"); if (h && h.textContent === arguments[0]) document.querySelector("button[data-range=\\"1h\\"]").click(); return true', name);
        await waitFor('redrawn', () => exec('return document.querySelector("button[data-range=\\"1h\\"]").getAttribute("aria-pressed") === "true" && document.querySelector(".diag") !== null'));
        last = await wd('POST', s('/execute/async'), {
          script: `const done = arguments[0];
            const sel = '.diag[data-probe=${probe}]';
            const pts = [...document.querySelectorAll(sel + ' svg.smoke g.pt')].map((g) => Object.assign({}, g.dataset));
            const hops = document.querySelectorAll(sel + ' table.hops tr[data-hop]').length;
            fetch('/api/targets/${name}/history?probe=${probe}&range=1h').then((r) => r.json()).then((api) => done({ pts, hops, api }));`,
          args: [],
        });
        return done(last);
      }, timeoutMs);
      return last;
    };

    await step('a trace target page: hop table and chart from the API', async () => {
      await wd('POST', s('/window/rect'), { width: 1280, height: 900 });
      // The target added above: its first trace is stored within its first interval.
      const { pts, hops, api } = await targetPage('path', 'trace', (r) => r.hops > 0, 120000);
      compare(pts, api, 'trace');
      if (hops !== api.hops.length) throw new Error(`hops shown ${hops}, API ${api.hops.length}`);
      await shot('21-target-trace');
      await wd('POST', s('/window/rect'), { width: 390, height: 844 });
      await sleep(300);
      await shot('22-target-trace-phone');
      const wide = await exec('return document.documentElement.scrollWidth > window.innerWidth + 1');
      await wd('POST', s('/window/rect'), { width: 1280, height: 900 });
      if (wide) throw new Error('the target page is wider than a phone screen');
    });

    await step('a ping target page: the chart points are the API points', async () => {
      // The loopback target has pinged every second since the device started; wait for a
      // minute that is over, whose bucket can no longer change.
      const { pts, api } = await targetPage('loopback-v4', 'ping', (r) => compare(r.pts, r.api, "ping") >= 1, 150000);
      const summary = await exec("return document.querySelector('.diag[data-probe=ping] .summary').textContent");
      if (!/rounds?, loss/.test(summary)) throw new Error(summary);
      if (pts.length < 2 || !api.points.length) throw new Error('too few points');
      await shot('23-target-ping');
      await click('button[data-range="24h"]');
      await waitFor('24 h range', () => exec("return document.querySelector('button[data-range=\"24h\"]').getAttribute('aria-pressed') === 'true' && /Last 24h/.test(document.body.innerText)"));
    });

    // "Run now": the answers must show while the run is still going (the button stays disabled
    // until the stream ends), then the run's summary.
    const runNowOn = async (name, probe, live, summary) => {
      await wd('POST', s('/url'), { url: `${URL_}#/targets/${name}` });
      await waitCss(`button[data-run=${probe}]`, 30000);
      await click(`button[data-run=${probe}]`);
      await waitFor(`${probe} answers while the run goes on`, () => exec(`return document.querySelector('button[data-run=${probe}]').disabled && (${live})`), 20000);
      await waitFor(`${probe} run summary`, () => exec(`return !document.querySelector('button[data-run=${probe}]').disabled && document.querySelector('.run [role=status]').textContent`), 60000);
      const text = await exec("return document.querySelector('.run [role=status]').textContent");
      if (!summary.test(text)) throw new Error(`${probe} run ended with: ${text}`);
      await exec("document.querySelector('.run').scrollIntoView({ block: 'center' }); return true");
    };

    await step('Run now on a ping target streams echoes as they arrive, then the summary', async () => {
      await runNowOn('loopback-v4', 'ping', "document.querySelectorAll('.run ol.echoes li[data-seq]').length >= 2", /^20 sent, 20 received, 0(\.0)? ?% loss/);
      const seqs = await exec("return [...document.querySelectorAll('.run ol.echoes li[data-seq]')].map((li) => Number(li.dataset.seq))");
      if (seqs.length !== 20 || seqs.some((q, i) => q !== i + 1)) throw new Error(`echo list ${JSON.stringify(seqs)}`);
      await shot('24-run-now-ping');
    });

    await step('Run now on a trace target fills the hop table with the peer as it answers', async () => {
      await runNowOn('path', 'trace', `[...document.querySelectorAll('.run table.hops tr[data-hop]')].some((tr) => tr.textContent.includes('${PEER}'))`, /^5 traces, destination reached in 1 hop\b/);
      await shot('25-run-now-trace');
    });

    await step('targets list and form fit a phone screen', async () => {
      await wd('POST', s('/window/rect'), { width: 390, height: 844 });
      for (const [view, css, name] of [['#/targets', '#add-target', '12-targets-phone'], ['#/targets/new', '#target-form', '13-form-phone'], ['#/settings', 'pre.file', '14-settings-phone']]) {
        await wd('POST', s('/url'), { url: `${URL_}${view}` });
        await waitCss(css);
        await sleep(200);
        await shot(name);
        // The config file viewer scrolls inside its own box; nothing else may be wider than the screen.
        const wide = await exec('return document.documentElement.scrollWidth > window.innerWidth + 1');
        if (wide) throw new Error(`${view} is wider than a phone screen`);
      }
    });
  } catch (e) {
    failed++;
    console.log(`FAIL setup: ${e.message}`);
  } finally {
    if (sid) await wd('DELETE', `/session/${sid}`).catch(() => {});
    driver.kill();
    rmSync(profile, { recursive: true, force: true });
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
