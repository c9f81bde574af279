// Browser end-to-end test of the Vantage page, speaking WebDriver to chromedriver with plain
// fetch() (no npm packages). Run by scripts/tests.d/55-web-e2e.sh inside a network namespace.
//   node web-e2e.mjs --url URL --artifacts DIR --data-dir DIR --peer ADDRESS
//     --far ADDRESS --router-ns NETNS --router-dev DEVICE   (a host two hops away, through the
//       peer: the peer's namespace and its device towards us, whose ICMP source the test changes)
//     --dns-port PORT --web-port PORT --cert-days DAYS   (a DNS and an HTTPS server on loopback)
import { spawn, spawnSync } from 'node:child_process';
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
const FAR = arg('far');
const ROUTER_NS = arg('router-ns');
const ROUTER_DEV = arg('router-dev');
const DNS_PORT = Number(arg('dns-port'));
const WEB_PORT = Number(arg('web-port'));
const CERT_DAYS = Number(arg('cert-days'));
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
      // The filter asks the daemon for the matching targets only; the counts stay over all.
      const cards = "return [...document.querySelectorAll('article[data-target]')].map((a) => a.dataset.target).join(' ')";
      const all = await exec(cards);
      if (all.split(' ').length < 2) throw new Error(`targets on the status page: ${all}`);
      const filter = (v) => exec(`const f = document.querySelector('#status-filter'); f.value = '${v}'; f.dispatchEvent(new Event('input')); return true`);
      await filter('PEER');
      await waitFor('only peer shown', async () => (await exec(cards)) === 'peer', 10000);
      const counts = await exec("return document.querySelector('#status-counts').textContent");
      if (!new RegExp(`of ${all.split(' ').length} targets`).test(counts)) throw new Error(counts);
      await filter('');
      await waitFor('every target shown again', async () => (await exec(cards)) === all, 10000);
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

    await step('a DNS and an HTTPS target added to the file by hand run from the reload', async () => {
      writeFileSync(join(DATA, 'vantage.toml'), `${configText()}
[[targets]]
name = "resolver"
host = "127.0.0.1"
probes = ["dns"]
dns = { query = "www.page.test", port = ${DNS_PORT}, interval = "1s", timeout = "500ms" }

[[targets]]
name = "site"
host = "127.0.0.1"
probes = ["tcp", "http"]
tcp = { port = ${WEB_PORT}, tls = true, insecure = true, interval = "1s", timeout = "500ms" }
http = { url = "https://127.0.0.1:${WEB_PORT}/", insecure = true, interval = "1s", timeout = "800ms" }
`);
      // From another view: the targets list is read when it is shown.
      await wd('POST', s('/url'), { url: `${URL_}#/status` });
      await waitCss('section.grid');
      await wd('POST', s('/url'), { url: `${URL_}#/targets` });
      await waitFor('hand-edit banner', () => exec("return /edited by hand/.test(document.body.innerText)"));
      await click('.banner button');
      await waitFor('rows of the new targets', () => exec("return !/edited by hand/.test(document.body.innerText) && document.querySelector('tr[data-target=resolver]') !== null && document.querySelector('tr[data-target=site]') !== null"));
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
      // Saving draws the settings page again: the next step must not type into the old one.
      await exec("document.getElementById('store-form').dataset.old = '1'");
      await click('#rw-save');
      await waitFor('timeout saved', () => /timeout = "7s"/.test(configText()));
      if (!/bearer_token = "e2e-token-0123456789"/.test(configText())) throw new Error(`token lost:\n${configText()}`);
      await waitCss('tr[data-endpoint=central]');
      await waitCss('#store-form:not([data-old])');
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

    await step('settings page: an update bundle this system cannot trust is refused', async () => {
      // A machine without the image's keyring refuses every bundle before installing it: the
      // upload (raw body, CSRF header) and the refusal shown on the card.
      const dir = mkdtempSync(join(tmpdir(), 'vantage-e2e-bundle-'));
      const bundle = join(dir, 'vantage-9.9.9-amd64.raucb');
      writeFileSync(bundle, Buffer.alloc(100 * 1024, 7));
      await wd('POST', s('/url'), { url: `${URL_}#/settings` });
      await waitCss('#f-bundle');
      const el = await find('#f-bundle');
      await wd('POST', s(`/element/${el}/value`), { text: bundle });
      await exec("document.getElementById('f-bundle').form.requestSubmit()");
      await waitFor('refusal shown', () => exec("return /no keyring at|not a bundle signed by a trusted key/.test(document.getElementById('f-bundle').form.innerText)"));
      await waitFor('status line', () => exec("return /Failed:/.test(document.getElementById('f-bundle').form.innerText)"));
      rmSync(dir, { recursive: true, force: true });
      await exec("document.getElementById('f-bundle').form.scrollIntoView()");
      await shot('21-update-refused');
    });

    await step('settings page: turn HTTPS on', async () => {
      await wd('POST', s('/url'), { url: `${URL_}#/settings` });
      await waitCss('pre.file');
      // Off the image (no helper, no node exporter) the page offers no local metrics switch.
      if (!(await exec("return !document.getElementById('node-exporter') && !/Local metrics/.test(document.body.innerText)"))) {
        throw new Error('the Local metrics card is shown off the image');
      }
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
      await type('#f-host', FAR);
      // Often enough for the path change below to show within seconds.
      await type('#f-interval', '5s');
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
      if (!/flows = 2/.test(text) || !/protocol = "icmp"/.test(text) || !/max_hops = 8/.test(text) || !/interval = "5s"/.test(text)) throw new Error(`trace options not saved:\n${text}`);
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
        if (!same(d.median, p.median_ms) || !same(d.loss, p.loss) || Number(d.rounds) !== p.rounds || Number(d.flagged) !== p.flagged) {
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
            const phasePts = [...document.querySelectorAll(sel + ' svg.phases g.phase-pt')].map((g) => Object.assign({}, g.dataset));
            const records = [...document.querySelectorAll(sel + ' table.records tbody tr')].map((tr) => [...tr.children].map((td) => td.textContent));
            const cert = document.querySelector(sel + ' .cert');
            const diff = [...document.querySelectorAll(sel + ' table.path tbody tr')].map((tr) => ({ hop: Number(tr.dataset.hop), differ: tr.classList.contains('differ'), cells: [...tr.children].map((td) => td.textContent) }));
            const pathSummary = (document.querySelector(sel + ' [data-path-summary]') || {}).textContent;
            const extra = { phasePts, records, diff, pathSummary, cert: cert && { text: cert.textContent, warn: cert.classList.contains('warn'), days: Number(cert.dataset.days) } };
            fetch('/api/targets/${name}/history?probe=${probe}&range=1h').then((r) => r.json()).then((api) => done({ pts, hops, api, ...extra }));`,
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
      // Rounds flagged for the device's load: a triangle on each bucket that has any.
      const marks = await exec("return document.querySelectorAll('.diag[data-probe=ping] svg.smoke g.pt path.flag').length");
      const flaggedBuckets = pts.filter((p) => Number(p.flagged) > 0).length;
      if (marks !== flaggedBuckets) throw new Error(`${marks} load marks for ${flaggedBuckets} flagged buckets`);
      if (!/flagged for the device's load/.test(await exec("return document.querySelector('.diag[data-probe=ping] .legend').textContent"))) throw new Error('no load mark in the legend');
      await shot('23-target-ping');
      await click('button[data-range="24h"]');
      await waitFor('24 h range', () => exec("return document.querySelector('button[data-range=\"24h\"]').getAttribute('aria-pressed') === 'true' && /Last 24h/.test(document.body.innerText)"));
      // A link opens the page on its range, and the chart says when it was drawn (the range
      // benchmark reads it); then the page's own link again, at 24 h, where the next steps start.
      await wd('POST', s('/url'), { url: `${URL_}#/targets/loopback-v4/7d` });
      await waitFor('7 d from the link', () => exec("return document.querySelector('button[data-range=\"7d\"]').getAttribute('aria-pressed') === 'true' && /Last 7d/.test(document.body.innerText) && Number(document.querySelector('svg.smoke').dataset.drawnMs) > 0"));
      await exec("document.querySelector('svg.smoke').dataset.old = '1'");
      await wd('POST', s('/url'), { url: `${URL_}#/targets/loopback-v4` });
      await waitFor('the page redrawn', () => exec("const c = document.querySelector('svg.smoke'); return c !== null && c.dataset.old === undefined"));
      await click('button[data-range="24h"]');
      await waitFor('24 h again', () => exec("return document.querySelector('button[data-range=\"24h\"]').getAttribute('aria-pressed') === 'true' && /Last 24h/.test(document.body.innerText)"));
    });

    const phoneFits = async (name) => {
      await wd('POST', s('/window/rect'), { width: 390, height: 844 });
      await sleep(300);
      await shot(name);
      const wide = await exec('return document.documentElement.scrollWidth > window.innerWidth + 1');
      await wd('POST', s('/window/rect'), { width: 1280, height: 900 });
      if (wide) throw new Error('the target page is wider than a phone screen');
    };

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
      await runNowOn('loopback-v4', 'ping', "document.querySelectorAll('.run ol li[data-seq]').length >= 2", /^20 sent, 20 received, 0(\.0)? ?% loss/);
      const seqs = await exec("return [...document.querySelectorAll('.run ol li[data-seq]')].map((li) => Number(li.dataset.seq))");
      if (seqs.length !== 20 || seqs.some((q, i) => q !== i + 1)) throw new Error(`echo list ${JSON.stringify(seqs)}`);
      await shot('24-run-now-ping');
    });

    await step('Run now on a trace target fills the hop table with the router and the far host as they answer', async () => {
      // Both rows while the run goes on: the router at hop 1, the far host at hop 2.
      const row = (ttl, addr) => `[...document.querySelectorAll('.run table.hops tr[data-hop="${ttl}"]')].some((tr) => !tr.hidden && tr.textContent.includes('${addr}'))`;
      await runNowOn('path', 'trace', `${row(1, PEER)} && ${row(2, FAR)}`, /^5 traces, destination reached in 2 hops\b/);
      await shot('25-run-now-trace');
    });

    await step('the router answers from another address: the path change shows the hops before and after', async () => {
      const before = await exec("return fetch('/api/targets/path/history?probe=trace&range=1h').then((r) => r.json())");
      const known = (before.changes || []).length;
      // From now on the router's ICMP errors come from its second address.
      const ip = spawnSync('ip', ['-n', ROUTER_NS, 'route', 'replace', '192.0.2.0/24', 'dev', ROUTER_DEV, 'src', '192.0.2.3'], { encoding: 'utf8' });
      if (ip.status !== 0) throw new Error(`ip route replace: ${ip.stderr}`);
      const r = await targetPage('path', 'trace', (x) => x.api.changes.length > known && x.diff.some((d) => d.hop === 1 && d.differ), 90000);
      const change = r.api.changes[r.api.changes.length - 1];
      const hop1 = r.diff.find((d) => d.hop === 1);
      if (hop1.cells[1] !== PEER || hop1.cells[2] !== '192.0.2.3' || hop1.cells[3] !== 'changed') throw new Error(`hop 1: ${JSON.stringify(hop1)}`);
      const hop2 = r.diff.find((d) => d.hop === 2);
      if (!hop2 || hop2.differ || hop2.cells[1] !== FAR || hop2.cells[2] !== FAR) throw new Error(`hop 2: ${JSON.stringify(hop2)}`);
      // The page's lists are the API's stored paths.
      const addrs = (name) => r.api.paths[name].hops.map((x) => x.addresses.join(' ')).join();
      if (addrs(change.from) !== `${PEER},${FAR}` || addrs(change.to) !== `192.0.2.3,${FAR}`) throw new Error(`API paths ${JSON.stringify(r.api.paths)}`);
      if (!/before 2 hops, after 2 hops; hop 1 changed\./.test(r.pathSummary)) throw new Error(r.pathSummary);
      await exec("document.querySelector('.path-diff').scrollIntoView({ block: 'center' }); return true");
      await shot('25b-path-change');
      await phoneFits('25c-path-change-phone');
    });

    // Each drawn phase bucket against the API's, and, for buckets that are over, each phase
    // against the mean of the stored rounds' `PHASE_seconds` in /api/samples.
    const comparePhases = async (name, probe, r) => {
      const ph = r.api.phases;
      if (!r.phasePts.length) throw new Error(`${probe}: no phases drawn`);
      const byT = new Map(ph.points.map((p) => [String(p.t), p]));
      const step_ = r.api.step_seconds;
      // Rounds are stored when they end: the newest buckets may grow between the drawing and
      // the API's answer, so only buckets that are over are compared.
      const closed = Math.floor(Date.now() / 1000 / step_) * step_ - step_;
      for (const d of r.phasePts) {
        if (Number(d.t) >= closed) continue;
        const p = byT.get(d.t);
        const drawn = d.ms.split(',').map((v) => (v === '' ? null : Number(v)));
        if (!p || JSON.stringify(drawn) !== JSON.stringify(p.ms)) throw new Error(`${probe} phases at ${d.t}: chart ${d.ms}, API ${JSON.stringify(p)}`);
      }
      const done = ph.points.filter((p) => p.t < closed);
      if (!done.length) return 0;
      const from = done[0].t, to = done[done.length - 1].t + step_;
      const samples = await exec(`return fetch('/api/samples?target=${name}&probe=${probe}&from=${from}&to=${to}').then((r) => r.json())`);
      for (const p of done) {
        const rounds = samples.samples.filter((x) => x.timestamp >= p.t && x.timestamp < p.t + step_);
        ph.names.forEach((n, i) => {
          const v = rounds.map((x) => x.values[`${n}_seconds`]).filter((x) => x !== undefined);
          const mean = v.length ? (v.reduce((a, b) => a + b, 0) / v.length) * 1000 : null;
          const ok = mean === null ? p.ms[i] === null : p.ms[i] !== null && Math.abs(p.ms[i] - mean) < 0.002;
          if (!ok) throw new Error(`${probe} ${n} at ${p.t}: API ${p.ms[i]} ms, /api/samples ${mean} ms over ${v.length} rounds`);
        });
      }
      return done.length;
    };

    await step('a DNS target page: lookup chart, phases against /api/samples, the last answer\'s records', async () => {
      await wd('POST', s('/window/rect'), { width: 1280, height: 900 });
      let checked = 0;
      const r = await targetPage('resolver', 'dns', (x) => {
        compare(x.pts, x.api, 'dns');
        return x.records.length > 0 && x.phasePts.length > 0 && x.api.phases.points.some((p) => p.t < Math.floor(Date.now() / 60000) * 60 - 60);
      }, 150000);
      checked = await comparePhases('resolver', 'dns', r);
      if (!checked) throw new Error('no finished bucket of phases to check');
      const data = r.records.map((c) => c[3]).sort().join();
      if (data !== '192.0.2.21,192.0.2.22,192.0.2.23' || r.records.length !== r.api.last.records.length) throw new Error(`records ${JSON.stringify(r.records)} against ${JSON.stringify(r.api.last)}`);
      if (!r.records.every((c) => c[0] === 'www.page.test.' && c[1] === 'A' && Number(c[2]) > 0)) throw new Error(JSON.stringify(r.records));
      const text = await exec("return document.querySelector('.diag[data-probe=dns]').innerText");
      if (!/Phases over the last 1h, mean per round: .*request/.test(text) || !/rcode NOERROR/.test(text)) throw new Error(text);
      await shot('26-target-dns');
      await phoneFits('27-target-dns-phone');
    });

    await step('an HTTPS target page: connect time, HTTP phases against /api/samples, status, certificate warning', async () => {
      const r = await targetPage('site', 'http', (x) => {
        compare(x.pts, x.api, 'http');
        return x.cert && x.phasePts.length > 0 && x.api.phases.points.some((p) => p.t < Math.floor(Date.now() / 60000) * 60 - 60);
      }, 150000);
      if (!(await comparePhases('site', 'http', r))) throw new Error('no finished bucket of phases to check');
      // openssl's -days counts from now: whole days left are CERT_DAYS - 1 by the time it is read.
      if (!r.cert.warn || r.cert.days !== r.api.last.cert_days_left || ![CERT_DAYS - 1, CERT_DAYS].includes(r.cert.days)) throw new Error(`certificate ${JSON.stringify(r.cert)}, API ${JSON.stringify(r.api.last)}`);
      if (!new RegExp(`expires in ${r.cert.days} days.*renew`).test(r.cert.text)) throw new Error(r.cert.text);
      const text = await exec("return document.querySelector('.diag[data-probe=http]').innerText");
      if (!/status 200/.test(text) || !/http: total time/.test(text)) throw new Error(text);
      // Status changes as the API has them (a round that timed out on a loaded machine is one:
      // 200 -> no response).
      const listed = await exec("return document.querySelectorAll('.diag[data-probe=http] ol.changes li').length");
      const none = /No status changes in the last 1h/.test(text);
      // (The API was read just after the page: it may have one change more, never fewer.)
      if (listed > r.api.changes.length || (listed === 0) !== none || (!r.api.changes.length && !none)) throw new Error(`${listed} changes listed, API ${JSON.stringify(r.api.changes)}`);
      // The TCP section of the same target: its chart against its API, its certificate too.
      const tcp = await wd('POST', s('/execute/async'), {
        script: `const done = arguments[0];
          const pts = [...document.querySelectorAll('.diag[data-probe=tcp] svg.smoke g.pt')].map((g) => Object.assign({}, g.dataset));
          const cert = document.querySelector('.diag[data-probe=tcp] .cert');
          fetch('/api/targets/site/history?probe=tcp&range=1h').then((r) => r.json()).then((api) => done({ pts, api, cert: cert && cert.textContent }));`,
        args: [],
      });
      compare(tcp.pts, tcp.api, 'tcp');
      if (!tcp.cert || !tcp.api.phases.names.includes('connect')) throw new Error(`tcp: ${JSON.stringify(tcp.cert)}`);
      await exec("document.querySelector('.diag[data-probe=http] .cert').scrollIntoView({ block: 'center' }); return true");
      await shot('28-target-https');
      await phoneFits('29-target-https-phone');
    });

    await step('status cards: each kind shows its main time in its module\'s words, and TCP its loss', async () => {
      await wd('POST', s('/url'), { url: `${URL_}#/status` });
      await waitFor('the site card\'s figures', () => exec(`const a = document.querySelector('article[data-target=site]');
        return !!a && /[0-9] (ms|µs) connect time/.test(a.innerText) && /[0-9] (ms|µs) total time/.test(a.innerText) && /%\\s*loss/.test(a.innerText)`), 30000);
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
