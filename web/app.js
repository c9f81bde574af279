// Vantage device page. Plain JavaScript, no framework, no network access beyond this device.
// Everything the server sends is inserted as text (never as HTML).
'use strict';

const app = document.getElementById('app');
let csrf = null;
let refreshTimer = null;
let passwordMin = 10;
// Bumped on every navigation: a view whose data arrives after the user moved on is dropped.
let viewGeneration = 0;
// The "Run now" stream being read: aborted when the view changes.
let runAbort = null;

// ---------- small helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function toast(msg) {
  const t = document.getElementById('toast');
  t.textContent = msg;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 3500);
}

function ago(unixSeconds) {
  if (!unixSeconds) return 'never';
  const s = Math.max(0, Date.now() / 1000 - unixSeconds);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(unixSeconds * 1000).toLocaleString();
}

function duration(sec) {
  const d = Math.floor(sec / 86400), hh = Math.floor(sec / 3600) % 24, m = Math.floor(sec / 60) % 60;
  return d ? `${d} d ${hh} h` : hh ? `${hh} h ${m} min` : m ? `${m} min` : `${Math.floor(sec)} s`;
}

// Milliseconds as people read them; under 0.1 ms (loopback, a LAN switch) in microseconds, so
// an axis or summary of such figures does not collapse to "0.00 ms" and "0.01 ms".
function ms(v) {
  if (v === null || v === undefined) return '–';
  if (v > 0 && v < 0.1) return `${(v * 1000).toFixed(v < 0.01 ? 1 : 0)} µs`;
  return v < 10 ? `${v.toFixed(2)} ms` : v < 100 ? `${v.toFixed(1)} ms` : `${Math.round(v)} ms`;
}

function pct(v) {
  return v === null || v === undefined ? '–' : `${Math.round(v * 1000) / 10}%`;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body.error || `HTTP ${status}`);
    this.status = status;
    this.errors = body.errors || [];
  }
}

async function api(method, path, body, extraHeaders) {
  const headers = Object.assign({}, extraHeaders);
  if (csrf && method !== 'GET') headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = {};
  if (r.status !== 204) {
    try { data = await r.json(); } catch (_) { data = {}; }
  }
  if (r.status === 401 && !path.startsWith('/api/auth/')) {
    csrf = null;
    route();
    throw new ApiError(r.status, { error: 'Your session ended; log in again.' });
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

// Shows field errors next to their fields (elements with data-field) and the rest in a list.
function showErrors(form, err) {
  form.querySelectorAll('.ferr').forEach((e) => { e.textContent = ''; });
  form.querySelectorAll('.invalid').forEach((e) => e.classList.remove('invalid'));
  const general = form.querySelector('.form-errors');
  general.replaceChildren();
  if (!err) return;
  const rest = [];
  for (const e of err.errors || []) {
    const slot = form.querySelector(`.ferr[data-for="${CSS.escape(e.field)}"]`)
      || (e.field.startsWith('labels.') && form.querySelector('.ferr[data-for="labels"]'));
    if (slot) {
      slot.textContent = slot.textContent ? `${slot.textContent}; ${e.message}` : e.message;
      slot.parentElement.classList.add('invalid');
    } else {
      rest.push(e.field && !e.field.startsWith('file:') ? `${e.field}: ${e.message}` : e.message);
    }
  }
  if (rest.length || !(err.errors || []).length) {
    general.append(h('p', { class: 'ferr' }, err.message));
    if (rest.length) general.append(h('ul', { class: 'errors' }, rest.map((m) => h('li', {}, m))));
  }
}

function field(label, name, input, hint) {
  input.id = `f-${name.replace(/\W/g, '-')}`;
  if (!input.name) input.name = name;
  return h('div', { class: 'field' },
    h('label', { for: input.id }, label), input,
    hint ? h('div', { class: 'hint' }, hint) : null,
    h('div', { class: 'ferr', 'data-for': name }));
}

async function busy(button, fn) {
  button.disabled = true;
  try { return await fn(); } finally { button.disabled = false; }
}

function setView(name) {
  document.querySelectorAll('nav a').forEach((a) => a.classList.toggle('active', a.dataset.view === name));
  clearInterval(refreshTimer);
  refreshTimer = null;
  if (runAbort) runAbort.abort();
  runAbort = null;
  return ++viewGeneration;
}

// Replaces the page content, unless the user has navigated since `gen` was taken.
function render(gen, ...nodes) {
  if (gen !== viewGeneration) return false;
  app.replaceChildren(...nodes);
  return true;
}

// ---------- first boot and login ----------

function passwordForm(title, intro, withConfirm, submitLabel, onSubmit, warning, code) {
  const pw = h('input', { type: 'password', autocomplete: withConfirm ? 'new-password' : 'current-password', required: true });
  const confirm = withConfirm ? h('input', { type: 'password', autocomplete: 'new-password', required: true }) : null;
  const button = h('button', { class: 'primary', type: 'submit' }, submitLabel);
  const form = h('form', { class: 'card narrow', novalidate: true },
    h('h1', {}, title), h('p', { class: 'muted' }, intro),
    warning ? h('p', { class: 'banner' }, warning) : null,
    code ? field('Setup code', 'setup_code', code, 'Printed when the device was flashed; also in a file on its SD card.') : null,
    field('Password', 'password', pw, withConfirm ? `At least ${passwordMin} characters.` : null),
    confirm ? field('Repeat the password', 'confirm', confirm) : null,
    h('div', { class: 'form-errors' }), button);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (withConfirm) {
      const errors = [];
      if ([...pw.value].length < passwordMin) errors.push({ field: 'password', message: `must be at least ${passwordMin} characters long` });
      else if (new Set(pw.value).size === 1) errors.push({ field: 'password', message: 'must not be one character repeated' });
      if (pw.value !== confirm.value) errors.push({ field: 'confirm', message: 'the two passwords differ' });
      if (errors.length) return showErrors(form, { message: 'Please fix the fields marked.', errors });
    }
    await busy(button, async () => {
      try {
        const r = await onSubmit(pw.value);
        csrf = r.csrf_token;
        go('#/status');
      } catch (e) { showErrors(form, e); }
    });
  });
  app.replaceChildren(form);
  (code || pw).focus();
}

function showSetup(state) {
  const code = state.setup_code_required ? h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', required: true }) : null;
  passwordForm('Welcome to Vantage',
    'This device has no admin password yet. Choose one now: it protects the targets and settings. There is no default password.',
    true, 'Set password and continue',
    (password) => api('POST', '/api/auth/setup', code ? { password, setup_code: code.value } : { password }),
    state.setup_warning, code);
}

function showLogin() {
  passwordForm('Log in', 'Enter the admin password of this device.', false, 'Log in',
    (password) => api('POST', '/api/auth/login', { password }));
}

// ---------- status ----------

function sparkline(points, intervalSec, historyMinutes) {
  const W = 300, H = 46;
  const el = svg('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
  const now = Date.now() / 1000;
  const start = now - historyMinutes * 60;
  const x = (t) => ((t + 30 - start) / (historyMinutes * 60)) * W;
  el.append(svg('line', { class: 'base', x1: 0, y1: H - 1, x2: W, y2: H - 1 }));
  const rtts = points.filter((p) => p.rtt_ms !== null);
  // Scaled to the largest RTT shown, so sub-millisecond jitter on a LAN is visible too.
  const max = Math.max(0.001, ...rtts.map((p) => p.rtt_ms)) * 1.15;
  for (const p of points) {
    if (p.loss) {
      const bh = Math.max(3, p.loss * (H - 4));
      el.append(svg('rect', { class: 'loss', x: x(p.t) - 2, y: H - bh, width: 4, height: bh }));
    }
  }
  if (rtts.length) {
    const pts = rtts.map((p) => `${x(p.t).toFixed(1)},${(H - 3 - (p.rtt_ms / max) * (H - 8)).toFixed(1)}`);
    if (pts.length === 1) pts.push(pts[0].replace(/^[\d.]+/, (v) => String(Number(v) + 3)));
    el.append(svg('polygon', { class: 'area', points: `${pts[0].split(',')[0]},${H} ${pts.join(' ')} ${pts[pts.length - 1].split(',')[0]},${H}` }));
    el.append(svg('polyline', { class: 'rtt', points: pts.join(' ') }));
  }
  const title = svg('title', {});
  title.textContent = `RTT and loss, last ${historyMinutes} minutes (one point a minute; red bars: loss). Peak ${ms(max / 1.15)}.`;
  el.append(title);
  return el;
}

function probeState(latest) {
  if (!latest) return 'unknown';
  return latest.success ? 'up' : 'down';
}

function targetCard(t, historyMinutes) {
  const states = t.probes.map((p) => probeState(p.latest));
  const state = states.includes('down') ? 'down' : states.every((s) => s === 'up') ? 'up' : 'unknown';
  const labels = Object.entries(t.labels || {}).map(([k, v]) => h('span', { class: 'chip' }, `${k}=${v}`));
  return h('article', { class: `card target ${state}`, 'data-target': t.name },
    h('h2', {}, h('span', { class: 'dot' }), h('a', { href: `#/targets/${encodeURIComponent(t.name)}`, class: 'target-link' }, t.name),
      h('span', { class: 'state' }, state === 'unknown' ? 'waiting' : state)),
    h('div', { class: 'muted mono small' }, t.host),
    labels.length ? h('div', { class: 'chips' }, labels) : null,
    t.probes.map((p) => {
      const l = p.latest;
      return h('div', { class: 'probe' },
        h('div', { class: 'row spread small muted' },
          h('span', {}, `${p.probe} every ${p.interval_seconds} s`),
          h('span', {}, l ? `last success ${ago(l.last_success)}` : 'no result yet')),
        h('div', { class: 'figures' },
          h('span', {}, h('b', {}, ms(l && l.rtt_ms)), h('span', { class: 'muted small' }, ` ${p.figure || 'time'}`)),
          l && l.loss != null ? h('span', {}, h('b', {}, pct(l.loss)), h('span', { class: 'muted small' }, ' loss')) : null,
          l && l.detail ? h('span', { class: 'small' }, l.detail) : null,
          l && l.address && l.address !== t.host ? h('span', { class: 'muted small mono' }, l.address) : null),
        l && l.error ? h('div', { class: 'ferr' }, l.error) : null,
        sparkline(p.history || [], p.interval_seconds, historyMinutes));
    }));
}

function ledLine(state) {
  const identify = h('button', { type: 'button', class: 'small', id: 'identify' },
    state.identify_remaining_seconds ? `identifying (${Math.ceil(state.identify_remaining_seconds)} s)` : 'Identify');
  identify.title = 'Blink every status LED for 30 seconds to find this device';
  identify.addEventListener('click', () => busy(identify, async () => {
    try { await api('POST', '/api/identify?seconds=30'); toast('The LEDs blink fast for 30 s'); } catch (e) { toast(e.message); }
  }));
  return h('span', {}, h('span', { class: 'block' }, state.leds.map((l) => `${l.label} ${l.pattern.replace(/_/g, ' ')}`).join(', ')), identify);
}

function storeLine(st) {
  if (!st.healthy) return h('span', { class: 'text-down' }, `failing: ${st.error || 'unknown error'}`);
  const pct = `${(100 * st.fill).toFixed(st.fill < 0.1 ? 1 : 0)} % full`;
  const span = st.oldest_ms ? `, back to ${ago(st.oldest_ms / 1000)}` : '';
  return `${pct} (${st.samples} rounds${span})`;
}

function shippingLine(rw) {
  const backlog = rw.endpoints.reduce((n, e) => n + e.backlog, 0);
  if (rw.state === 'shipping') return h('span', { class: 'text-up' }, backlog ? `shipping, ${backlog} rounds to send` : 'shipping, up to date');
  if (rw.state === 'uplink down') {
    const err = rw.endpoints.map((e) => e.last_error).find((e) => e);
    return h('span', { class: 'text-down' }, `uplink down: ${backlog} rounds kept for later${err ? ` (${err})` : ''}`);
  }
  return 'starting';
}

function notConfigured(what) {
  return h('span', { class: 'muted' }, 'not configured');
}

// The status view shows one page of targets (the daemon's page size); the daemon counts over
// all of them. Kept across visits, so coming back from a target keeps the filter and the page.
const statusQuery = { q: '', state: 'all', offset: 0 };

function statusPath() {
  const p = new URLSearchParams();
  if (statusQuery.q) p.set('q', statusQuery.q);
  if (statusQuery.state !== 'all') p.set('state', statusQuery.state);
  if (statusQuery.offset) p.set('offset', String(statusQuery.offset));
  const qs = p.toString();
  return qs ? `/api/status?${qs}` : '/api/status';
}

// The filter, the state choice and the pager: built once per visit, so a refresh does not
// take the focus from the filter while the user types in it.
function statusControls(reload) {
  const filter = h('input', { type: 'search', id: 'status-filter', value: statusQuery.q, placeholder: 'Filter by name, host or label', 'aria-label': 'Filter targets', maxlength: 128 });
  filter.setAttribute('autocapitalize', 'off');
  const state = h('select', { id: 'status-state', 'aria-label': 'Show' },
    [['all', 'all targets'], ['silent', 'not answering'], ['answering', 'answering']].map(([v, l]) => h('option', { value: v, selected: statusQuery.state === v }, l)));
  const prev = h('button', { type: 'button', id: 'status-prev' }, 'Previous');
  const next = h('button', { type: 'button', id: 'status-next' }, 'Next');
  const where = h('span', { class: 'muted small', id: 'status-page' });
  let typing = null;
  filter.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => { statusQuery.q = filter.value.trim(); statusQuery.offset = 0; reload(); }, 300);
  });
  state.addEventListener('change', () => { statusQuery.state = state.value; statusQuery.offset = 0; reload(); });
  let page = { offset: 0, limit: 1, matched: 0 };
  prev.addEventListener('click', () => { statusQuery.offset = Math.max(0, page.offset - page.limit); reload(); });
  next.addEventListener('click', () => { statusQuery.offset = page.offset + page.limit; reload(); });
  const el = h('section', { class: 'card row spread', id: 'status-controls' },
    h('div', { class: 'row' }, filter, state), h('div', { class: 'row' }, where, prev, next));
  const update = (p) => {
    page = p;
    const shown = Math.max(0, Math.min(p.limit, p.matched - p.offset));
    where.textContent = p.matched ? `${shown ? p.offset + 1 : 0}–${p.offset + shown} of ${p.matched}` : 'no target matches';
    prev.disabled = p.offset === 0;
    next.disabled = p.offset + p.limit >= p.matched;
  };
  return { el, update };
}

async function showStatus() {
  const gen = setView('status');
  const facts = h('div', {});
  const grid = h('div', {});
  let controls = null;
  const load = async () => {
    let s;
    let img = null;
    try {
      // The A/B slot beside the version; a failure there leaves the rest of the page alone.
      [s, img] = await Promise.all([api('GET', statusPath()),
        api('GET', '/api/update').then((u) => u.image).catch(() => null)]);
    } catch (e) {
      if (e.status !== 401) toast(e.message);
      return;
    }
    if (gen !== viewGeneration) return;
    // A page past the end (targets removed, a narrower filter): back to the last one.
    if (s.page.offset > 0 && s.page.offset >= s.page.matched) {
      statusQuery.offset = Math.max(0, Math.floor((s.page.matched - 1) / s.page.limit) * s.page.limit);
      return load();
    }
    const d = s.device;
    document.getElementById('device-name').textContent = d.hostname;
    const addrs = d.addresses.map((a) => `${a.address} (${a.interface})`).join(', ') || 'none';
    facts.replaceChildren(h('section', { class: 'card' },
      h('div', { class: 'row spread' }, h('h1', {}, 'Status'),
        h('span', { class: 'muted small', id: 'status-counts' }, `${s.counts.answering} of ${s.counts.targets} targets answering · updated ${new Date().toLocaleTimeString()}`)),
      h('dl', { class: 'facts' },
        h('div', {}, h('dt', {}, 'Device'), h('dd', {}, d.hostname)),
        h('div', {}, h('dt', {}, 'Version'), h('dd', {}, d.version)),
        img ? h('div', { class: 'wide' }, h('dt', {}, 'Root slot'), h('dd', { id: 'status-slot' }, slotLine(img),
          img.last ? h('div', { class: img.last.result === 'good' ? 'muted small' : 'ferr' }, lastTrialLine(img.last)) : null)) : null,
        h('div', {}, h('dt', {}, 'Up for'), h('dd', {}, duration(d.uptime_seconds))),
        h('div', { class: 'wide' }, h('dt', {}, 'Addresses'), h('dd', { class: 'mono small' }, addrs)),
        h('div', { class: 'wide' }, h('dt', {}, 'Config'), h('dd', { class: 'mono small' }, s.config.embedded ? 'built-in default' : (s.config.default || s.config.path))),
        h('div', {}, h('dt', {}, 'Sample store'), h('dd', {}, s.store.configured ? storeLine(s.store) : notConfigured('store'))),
        h('div', {}, h('dt', {}, 'Uplink (remote write)'), h('dd', {}, s.remote_write.configured ? shippingLine(s.remote_write) : notConfigured('remote write'))),
        h('div', {}, h('dt', {}, 'Status LEDs'), h('dd', {}, s.leds.configured ? ledLine(s.leds.state) : notConfigured('leds'))),
        s.provisioning && s.provisioning.url ? h('div', { class: 'wide' }, h('dt', {}, 'Provisioning'),
          h('dd', {}, `${s.provisioning.targets.length} targets from `, h('span', { class: 'mono small' }, s.provisioning.url),
            ` (${({ remote: 'fetched', cache: 'last good copy' })[s.provisioning.source] || 'nothing fetched yet'})`,
            s.provisioning.last_error ? h('div', { class: 'ferr' }, s.provisioning.last_error) : null)) : null)));
    if (!s.counts.targets) {
      grid.replaceChildren(h('div', { class: 'card empty' }, 'No targets yet. ', h('a', { href: '#/targets/new' }, 'Add the first one'), '.'));
      render(gen, facts, grid);
      return;
    }
    if (!controls) controls = statusControls(load);
    controls.update(s.page);
    grid.replaceChildren(h('section', { class: 'grid' }, s.targets.map((t) => targetCard(t, s.history_minutes))));
    if (!app.contains(controls.el)) render(gen, facts, controls.el, grid);
  };
  await load();
  refreshTimer = setInterval(load, 5000);
}

// ---------- targets ----------

// The probe kinds and their options come from the daemon (GET /api/probes), which derives
// them from the defaults and ranges its config loader enforces: the page keeps no list of its own.
const DURATION_RE = /^\s*\d+(\.\d+)?\s*(ms|s|m|h|d|min|sec)\s*([0-9].*)?$/i;
const durationMs = (v) => {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/i.exec(v);
  return m ? Number(m[1]) * { ms: 1, s: 1e3, m: 6e4, h: 36e5, d: 864e5 }[m[2].toLowerCase()] : null;
};

// Client-side checks from the daemon's field descriptions; the server has the last word.
function localCheck(t, forms) {
  const errors = [];
  if (!t.name) errors.push({ field: 'name', message: 'a name is required' });
  else if (!/^[A-Za-z0-9._-]{1,64}$/.test(t.name)) errors.push({ field: 'name', message: 'letters, digits, ".", "_" and "-" only, at most 64' });
  if (!t.host) errors.push({ field: 'host', message: 'an address or host name is required' });
  else if (!/^[A-Za-z0-9.:_-]+$/.test(t.host) || t.host.startsWith('-')) errors.push({ field: 'host', message: 'not an IP address or host name' });
  if (!t.probes.length) errors.push({ field: 'probes', message: 'choose at least one probe' });
  if (t.interval !== undefined && !DURATION_RE.test(t.interval)) errors.push({ field: 'interval', message: 'write a duration with a unit, e.g. "1s" or "500ms"' });
  for (const form of forms) {
    const opts = t[form.kind] || {};
    for (const f of form.fields) {
      const v = opts[f.key];
      if (v === undefined) continue;
      const name = `${form.kind}.${f.key}`;
      if (f.type === 'integer' && (!Number.isInteger(v) || v < f.min || v > f.max)) errors.push({ field: name, message: `must be between ${f.min} and ${f.max}` });
      if (f.type === 'duration') {
        const ms = durationMs(String(v));
        if (!DURATION_RE.test(String(v))) errors.push({ field: name, message: 'write a duration with a unit, e.g. "1s" or "500ms"' });
        else if (ms !== null && (ms < durationMs(f.min) || ms > durationMs(f.max))) errors.push({ field: name, message: `must be between ${f.min} and ${f.max}` });
      }
    }
  }
  return errors;
}

// One probe kind's fieldset: inputs for its fields, and how to read them back.
function probeFieldset(form, existing) {
  const values = existing || {};
  const inputs = {};
  const fields = form.fields.map((f) => {
    const name = `${form.kind}.${f.key}`;
    let el;
    if (f.type === 'choice') {
      el = h('select', {}, f.options.map((v) => h('option', { value: v, selected: (values[f.key] ?? f.default) === v }, v)));
    } else if (f.type === 'lines') {
      el = h('textarea', { rows: 2, placeholder: f.default || null });
      el.value = (values[f.key] || []).join('\n');
    } else {
      el = h('input', { type: f.type === 'integer' ? 'number' : 'text', value: values[f.key] ?? '', placeholder: f.default || null, inputmode: f.type === 'integer' ? 'numeric' : null });
      el.setAttribute('autocapitalize', 'off');
    }
    inputs[f.key] = el;
    const range = f.type === 'integer' || f.type === 'duration' ? `${f.min} to ${f.max}` : '';
    return field(f.label, name, el, [f.hint, range].filter(Boolean).join('; '));
  });
  const set = h('fieldset', { id: `${form.kind}-options` }, h('legend', {}, form.title),
    h('p', { class: 'hint' }, `The host is ${form.host_hint}. Empty fields use the defaults of the config file.`),
    h('div', { class: 'cols' }, fields));
  const read = () => {
    // Options the form has no field for (written by hand) are kept as they are.
    const out = {};
    for (const [k, v] of Object.entries(values)) if (!form.fields.some((f) => f.key === k)) out[k] = v;
    for (const f of form.fields) {
      const el = inputs[f.key];
      if (f.type === 'lines') { const l = linesOf(el); if (l.length) out[f.key] = l; continue; }
      const v = el.value.trim();
      if (f.type === 'choice') { if (v !== f.default || values[f.key] !== undefined) out[f.key] = v; continue; }
      if (v !== '') out[f.key] = f.type === 'integer' && /^-?\d+$/.test(v) ? Number(v) : v;
    }
    return out;
  };
  return { set, read };
}

function targetForm(existing, defaults, forms) {
  const raw = existing || { probes: forms.filter((f) => f.default).map((f) => f.kind) };
  const input = (name, type, value, placeholder) => h('input', { type, value: value ?? '', placeholder: placeholder || null, inputmode: type === 'number' ? 'numeric' : null });
  const name = input('name', 'text', raw.name, 'e.g. gateway');
  const host = input('host', 'text', raw.host, 'e.g. 192.168.1.1 or router.lan');
  host.setAttribute('autocapitalize', 'off'); name.setAttribute('autocapitalize', 'off');
  const interval = input('interval', 'text', raw.interval, defaults.interval || '1s');
  const probeBoxes = forms.map((f) => h('label', {},
    h('input', { type: 'checkbox', name: `probe-${f.kind}`, value: f.kind, checked: (raw.probes || []).includes(f.kind) }), f.kind));
  const labels = h('textarea', { rows: 2, placeholder: 'site=office' });
  labels.value = Object.entries(raw.labels || {}).map(([k, v]) => `${k}=${v}`).join('\n');
  const sets = forms.map((f) => ({ kind: f.kind, ...probeFieldset(f, raw[f.kind]) }));
  const testButton = h('button', { type: 'button', id: 'test-now' }, 'Test now');
  const saveButton = h('button', { type: 'submit', class: 'primary', id: 'save' }, existing ? 'Save changes' : 'Add target');
  const result = h('div', { id: 'test-result' });
  const form = h('form', { class: 'card', novalidate: true, id: 'target-form' },
    h('h1', {}, existing ? `Edit ${existing.name}` : 'New target'),
    h('div', { class: 'cols' },
      field('Name', 'name', name, 'Unique; letters, digits, ".", "_", "-".'),
      field('Host', 'host', host, 'IPv4 or IPv6 address, or a host name; for DNS the server to ask, or "system".'),
      field('Interval', 'interval', interval, `Between rounds; default ${defaults.interval || '1s for ping'}.`)),
    h('div', { class: 'field' }, h('label', {}, 'Probes'), h('div', { class: 'checks' }, probeBoxes), h('div', { class: 'ferr', 'data-for': 'probes' })),
    sets.map((x) => x.set),
    field('Labels', 'labels', labels, 'One name=value per line; added to every series of this target.'),
    h('div', { class: 'form-errors' }),
    h('div', { class: 'row' }, saveButton, testButton, h('a', { href: '#/targets', class: 'button' }, 'Cancel')),
    result);

  const syncProbes = () => {
    for (const x of sets) x.set.hidden = !form.querySelector(`input[value=${x.kind}]`).checked;
  };
  form.querySelectorAll('input[type=checkbox]').forEach((cb) => cb.addEventListener('change', syncProbes));
  syncProbes();
  const collect = () => {
    const t = { name: name.value.trim(), host: host.value.trim(), probes: [] };
    form.querySelectorAll('input[type=checkbox]:checked').forEach((cb) => t.probes.push(cb.value));
    if (interval.value.trim()) t.interval = interval.value.trim();
    // Options of the chosen kinds only; a kind's table left empty is not written.
    for (const x of sets) {
      if (!t.probes.includes(x.kind)) continue;
      const o = x.read();
      if (Object.keys(o).length) t[x.kind] = o;
    }
    const lab = {};
    for (const line of labels.value.split('\n')) {
      if (!line.trim()) continue;
      const i = line.indexOf('=');
      if (i < 0) lab[line.trim()] = '';
      else lab[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    if (Object.keys(lab).length) t.labels = lab;
    return t;
  };
  const check = (t) => {
    const errors = localCheck(t, forms);
    if (errors.length) { showErrors(form, { message: 'Please fix the fields marked.', errors }); return false; }
    return true;
  };
  testButton.addEventListener('click', () => busy(testButton, async () => {
    const t = collect();
    result.replaceChildren();
    if (!check(t)) return;
    showErrors(form, null);
    result.replaceChildren(h('div', { class: 'result muted' }, 'Probing…'));
    try {
      const r = await api('POST', '/api/targets/test', t);
      result.replaceChildren(...r.results.map((x) => h('div', { class: `result ${x.success ? 'ok' : 'fail'}` },
        h('b', {}, `${x.probe}: ${x.success ? 'OK' : 'failed'}`), ' ',
        x.sent !== undefined ? `${x.received}/${x.sent} replies from ${x.address || t.host}` : '',
        x.rcode !== undefined ? `${x.rcode || 'no answer'}, ${x.answers} answers from ${x.server || t.host} in ${ms(x.lookup_ms)}` : '',
        x.rtts_ms && x.rtts_ms.length ? `, RTT ${x.rtts_ms.map(ms).join(', ')}` : '',
        x.hops ? `${x.reached ? 'reached' : 'not reached'} in ${x.hops.length} hop${x.hops.length === 1 ? '' : 's'}` : '',
        // Kinds without their own line: the round at a glance.
        x.sent === undefined && x.rcode === undefined && !x.hops && x.figure
          ? [x.detail, x.time_ms != null ? `${x.figure} ${ms(x.time_ms)}` : null, x.peer ? `from ${x.peer}` : null].filter(Boolean).join(', ') : '',
        x.hops ? h('ol', { class: 'hops mono small' }, x.hops.map((hp) => h('li', { value: hp.ttl },
          hp.addresses.length ? `${hp.addresses.join(', ')} ${hp.rtt_ms == null ? '' : ms(hp.rtt_ms)}` : '*'))) : null,
        x.error ? h('div', { class: 'ferr' }, x.error) : null)));
      result.scrollIntoView({ block: 'nearest' });
    } catch (e) { result.replaceChildren(); showErrors(form, e); }
  }));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(saveButton, async () => {
      const t = collect();
      if (!check(t)) return;
      try {
        const headers = { 'If-Match': `"${defaults.revision}"` };
        if (existing) await api('PUT', `/api/targets/${encodeURIComponent(existing.name)}`, t, headers);
        else await api('POST', '/api/targets', t, headers);
        toast(existing ? `Saved ${t.name}` : `Added ${t.name}`);
        location.hash = '#/targets';
      } catch (e) { showErrors(form, e); }
    });
  });
  return form;
}

function fileBanner(list) {
  const out = [];
  if (list.file_errors.length) {
    out.push(h('div', { class: 'banner error' },
      h('b', {}, 'The config file has errors; the device keeps running the last good config.'),
      h('ul', { class: 'errors' }, list.file_errors.map((e) => h('li', {}, `${e.line ? `line ${e.line}: ` : ''}${e.field ? `${e.field}: ` : ''}${e.message}`)))));
  } else if (!list.running_matches_file) {
    const b = h('button', { type: 'button' }, 'Apply the file now');
    b.addEventListener('click', () => busy(b, async () => {
      try { await api('POST', '/api/reload'); toast('Config reloaded'); showTargets(); } catch (e) { toast(e.message); }
    }));
    out.push(h('div', { class: 'banner row spread' }, h('span', {}, 'The config file was edited by hand and differs from what runs.'), b));
  }
  if (list.embedded || list.default) {
    const running = list.default ? ['Running the default config ', h('span', { class: 'mono' }, list.default)] : ['Running the built-in default config'];
    out.push(h('div', { class: 'banner' }, ...running, '. Your first change creates ', h('span', { class: 'mono' }, list.path), '.'));
  }
  return out;
}

async function loadTargets() {
  const [list, cfg, probes] = await Promise.all([api('GET', '/api/targets'), api('GET', '/api/config'), api('GET', '/api/probes')]);
  const m = /^\s*interval\s*=\s*"([^"]*)"/m.exec(cfg.text.split(/^\s*\[\[targets\]\]/m)[0]);
  return { list, forms: probes.probes, defaults: { interval: m && m[1], revision: list.revision } };
}

async function showTargets(sub, action) {
  if (sub && sub !== 'new' && action !== 'edit') return showTarget(sub, action);
  const gen = setView('targets');
  let data;
  try { data = await loadTargets(); } catch (e) { if (e.status !== 401) toast(e.message); return; }
  const { list, defaults, forms } = data;
  if (sub === 'new') { render(gen, ...fileBanner(list), targetForm(null, defaults, forms)); return; }
  if (sub) {
    const t = list.targets.find((x) => x.raw.name === sub);
    render(gen, ...fileBanner(list), t ? targetForm(t.raw, defaults, forms) : h('div', { class: 'card' }, `No target named ${sub}.`));
    return;
  }
  const rows = list.targets.map(({ raw, effective }) => {
    const del = h('button', { type: 'button', class: 'danger', 'data-delete': raw.name }, 'Delete');
    del.addEventListener('click', () => {
      if (!confirm(`Delete target ${raw.name}? Its probes stop now.`)) return;
      busy(del, async () => {
        try {
          await api('DELETE', `/api/targets/${encodeURIComponent(raw.name)}`, undefined, { 'If-Match': `"${list.revision}"` });
          toast(`Deleted ${raw.name}`);
          showTargets();
        } catch (e) { toast(e.message); }
      });
    });
    const every = effective ? effective.probes.map(([k, i]) => `${k} ${i.secs + i.nanos / 1e9}s`).join(', ') : `${(raw.probes || []).join(', ')} (not applied yet)`;
    return h('tr', { 'data-target': raw.name },
      h('td', {}, h('a', { href: `#/targets/${encodeURIComponent(raw.name)}` }, h('b', {}, raw.name))),
      h('td', { class: 'mono small' }, raw.host),
      h('td', { class: 'hide-narrow small' }, every),
      h('td', { class: 'actions' }, h('a', { class: 'button', href: `#/targets/${encodeURIComponent(raw.name)}/edit`, 'data-edit': raw.name }, 'Edit'), ' ', del));
  });
  for (const name of list.provisioned || []) {
    rows.push(h('tr', { 'data-target': name }, h('td', {}, h('b', {}, name)),
      h('td', { class: 'muted small', colspan: 3 }, 'from central provisioning: edit it on the provisioning server')));
  }
  render(gen, ...fileBanner(list), h('section', { class: 'card' },
    h('div', { class: 'row spread' }, h('h1', {}, 'Targets'), h('a', { href: '#/targets/new', class: 'button primary', id: 'add-target' }, 'Add target')),
    rows.length ? h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Host'), h('th', { class: 'hide-narrow' }, 'Probes'), h('th', {}))), h('tbody', {}, rows))
      : h('p', { class: 'empty' }, 'No targets yet.'),
    h('p', { class: 'hint' }, 'Saved to ', h('span', { class: 'mono' }, list.path), '; the previous version is kept as ', h('span', { class: 'mono' }, `${list.path}.bak`), '.')));
}

// ---------- one target: diagnostics ----------

// Ranges offered (the API's names); loss colours from the Okabe-Ito palette, told apart by
// colour-blind readers, and repeated as bar heights under the chart.
const RANGES = ['1h', '24h', '7d', '30d'];
const LOSS_COLOURS = [[0, '#0072B2', 'none'], [0.05, '#E69F00', 'under 5 %'], [0.2, '#D55E00', '5–20 %'], [0.999, '#CC79A7', '20–99 %'], [1, '#000000', 'all']];
let targetRange = '1h';

function lossColour(loss) {
  if (!loss) return LOSS_COLOURS[0][1];
  return (LOSS_COLOURS.find(([lim]) => lim > 0 && loss <= lim) || LOSS_COLOURS[LOSS_COLOURS.length - 1])[1];
}

// What a probe's marks are, whose changes the chart and the list show.
const MARK_NAMES = { dns: 'rcode', trace: 'path', http: 'status' };
const markName = (probe) => MARK_NAMES[probe] || 'outcome';

function summaryText(d, what) {
  const s = d.summary;
  if (!s.rounds) return d.store_open === false ? 'The sample store is not open (the log says why): no history to show.' : `No rounds stored in the last ${d.range}.`;
  return `Last ${d.range}: ${s.rounds} round${s.rounds === 1 ? '' : 's'}, loss ${pct(s.loss)}; ${what} median ${ms(s.median_ms)}, ` +
    `min ${ms(s.min_ms)}, avg ${ms(s.avg_ms)}, max ${ms(s.max_ms)}, stddev ${ms(s.stddev_ms)}` +
    (d.changes_total ? `; ${d.changes_total} ${markName(d.probe)} change${d.changes_total > 1 ? 's' : ''}` : '') +
    (s.flagged ? `; ${s.flagged} round${s.flagged > 1 ? 's' : ''} flagged for the device's load (▲)` : '') + '.';
}

// SmokePing-style: the 10–90 % and 25–75 % spread of each bucket as shades, the median as a
// short line coloured by the bucket's loss, loss also as a bar at the bottom, changes as lines.
function smokeChart(d, what) {
  const W = 600, H = 220, top = 8, bottom = 24, left = 58;
  const el = svg('svg', { class: 'smoke', viewBox: `0 0 ${W} ${H}`, role: 'img', 'data-probe': d.probe });
  const title = svg('title', {});
  title.textContent = summaryText(d, what);
  el.append(title);
  const span = Math.max(1, d.to - d.from);
  const bw = Math.max(1, (W - left) * d.step_seconds / span);
  const x = (t) => left + ((t - d.from) / span) * (W - left);
  const withTime = d.points.filter((p) => p.median_ms !== null);
  const max = Math.max(0.01, ...withTime.map((p) => p.p90_ms)) * 1.1;
  const y = (v) => top + (1 - v / max) * (H - top - bottom);
  for (const f of [0, 0.5, 1]) {
    el.append(svg('line', { class: 'grid', x1: left, x2: W, y1: y(max * f), y2: y(max * f) }));
    const lab = svg('text', { class: 'axis', x: left - 4, y: y(max * f) + 4, 'text-anchor': 'end' });
    // The unit once, at the top; the lower ticks in the same unit.
    const v = max * f;
    lab.textContent = f === 1 ? ms(max) : f === 0 ? '0' : max < 0.1 ? (v * 1000).toPrecision(2) : v.toFixed(max < 10 ? 2 : max < 100 ? 1 : 0);
    el.append(lab);
  }
  for (const [t, anchor] of [[d.from, 'start'], [d.to, 'end']]) {
    const lab = svg('text', { class: 'axis', x: anchor === 'start' ? left : W, y: H - 4, 'text-anchor': anchor });
    lab.textContent = new Date(t * 1000).toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
    el.append(lab);
  }
  for (const p of d.points) {
    const x0 = x(p.t);
    const g = svg('g', { class: 'pt', 'data-t': p.t, 'data-median': p.median_ms === null ? '' : p.median_ms, 'data-loss': p.loss === null ? '' : p.loss, 'data-rounds': p.rounds, 'data-flagged': p.flagged || 0 });
    const tip = svg('title', {});
    tip.textContent = `${new Date(p.t * 1000).toLocaleString()}: ${p.rounds} rounds, median ${ms(p.median_ms)} (10–90 %: ${ms(p.p10_ms)}–${ms(p.p90_ms)}), loss ${pct(p.loss)}` +
      (p.flagged ? `; ${p.flagged} flagged for the device's load` : '');
    g.append(tip);
    if (p.median_ms !== null) {
      g.append(svg('rect', { class: 'spread90', x: x0, width: bw, y: y(p.p90_ms), height: Math.max(0.5, y(p.p10_ms) - y(p.p90_ms)) }));
      g.append(svg('rect', { class: 'spread50', x: x0, width: bw, y: y(p.p75_ms), height: Math.max(0.5, y(p.p25_ms) - y(p.p75_ms)) }));
      g.append(svg('rect', { class: 'median', x: x0, width: Math.max(bw, 1.5), y: y(p.median_ms) - 1.5, height: 3, fill: lossColour(p.loss) }));
    }
    if (p.flagged) {
      // A triangle at the top: the bucket's times may include the device's own delays.
      const cx = x0 + Math.max(bw, 1.5) / 2;
      g.append(svg('path', { class: 'flag', d: `M${cx - 4} ${top} L${cx + 4} ${top} L${cx} ${top + 7} Z` }));
    }
    if (p.loss) {
      const lh = Math.max(2, p.loss * 14);
      g.append(svg('rect', { class: 'lossbar', x: x0, width: Math.max(bw, 1.5), y: H - bottom - lh, height: lh, fill: lossColour(p.loss) }));
    }
    el.append(g);
  }
  for (const c of d.changes || []) {
    el.append(svg('line', { class: 'change', x1: x(c.t), x2: x(c.t), y1: top, y2: H - bottom, 'data-t': c.t }));
  }
  return el;
}

function swatch(colour) {
  const sw = h('span', { class: 'swatch' });
  sw.style.background = colour; // through the CSSOM: the page's CSP refuses style attributes
  return sw;
}

function lossLegend(d) {
  return h('div', { class: 'legend small muted' }, 'Median coloured by loss: ',
    LOSS_COLOURS.map(([, c, label]) => h('span', { class: 'key' }, swatch(c), label)),
    h('span', { class: 'key' }, h('span', { class: 'swatch shade' }), 'spread 10–90 % and 25–75 %'),
    d.changes ? h('span', { class: 'key' }, h('span', { class: 'dash' }), `${markName(d.probe)} change`) : null,
    h('span', { class: 'key' }, h('span', { class: 'flag-key', 'aria-hidden': 'true' }, '▲'), "rounds flagged for the device's load"));
}

function changesList(d) {
  const what = markName(d.probe);
  if (!d.changes || !d.changes.length) return h('p', { class: 'small muted' }, `No ${what} changes in the last ${d.range}` + (d.current ? ` (now ${d.current}).` : '.'));
  // Trace: a button per change shows the path's hops before and after it (the latest first).
  const panel = d.paths ? h('div', { class: 'path-diff', 'aria-live': 'polite' }) : null;
  const items = d.changes.map((c) => {
    const li = h('li', { 'data-t': c.t },
      h('span', { class: 'muted' }, new Date(c.t * 1000).toLocaleString()), ' ',
      h('span', { class: 'mono' }, `${c.from} → ${c.to}`));
    if (panel) {
      const b = h('button', { type: 'button', class: 'small', 'data-path-change': c.t, 'aria-pressed': 'false' }, 'Hops');
      b.addEventListener('click', () => {
        items.forEach((x) => x.querySelector('button').setAttribute('aria-pressed', String(x === li)));
        panel.replaceChildren(pathDiff(d, c));
      });
      li.append(' ', b);
    }
    return li;
  });
  if (panel) items[items.length - 1].querySelector('button').click();
  return h('div', {}, h('h3', {}, `${what} changes`),
    h('ol', { class: 'changes small' }, items),
    d.changes_total > d.changes.length ? h('p', { class: 'small muted' }, `${d.changes_total - d.changes.length} more not listed.`) : null,
    panel);
}

// A path's addresses at one hop: '*' for a hop that did not answer, '–' for one the path
// does not reach.
function hopAddrs(path, ttl) {
  const x = path.hops.find((p) => p.hop === ttl);
  return x ? (x.addresses.join(' ') || '*') : '–';
}

// The hops of the path before and after change `c`, side by side; hops whose addresses
// differ (both answered, or only one path reaches them) are marked in words and in the summary.
function pathDiff(d, c) {
  const [before, after] = [d.paths[c.from], d.paths[c.to]];
  const when = new Date(c.t * 1000).toLocaleString();
  if (!before && !after) return h('p', { class: 'small muted', 'data-path-summary': '' }, `The hop addresses of paths ${c.from} and ${c.to} were not stored.`);
  const paths = [before, after].filter(Boolean);
  const ttls = [...new Set(paths.flatMap((p) => p.hops.map((x) => x.hop)))].sort((a, b) => a - b);
  const changed = [];
  const rows = ttls.map((ttl) => {
    const [a, b] = [before ? hopAddrs(before, ttl) : '(not stored)', after ? hopAddrs(after, ttl) : '(not stored)'];
    const differ = before && after && a !== b && a !== '*' && b !== '*';
    if (differ) changed.push(ttl);
    return h('tr', { 'data-hop': ttl, class: differ ? 'differ' : null },
      h('td', {}, ttl), h('td', {}, a), h('td', {}, b), h('td', {}, differ ? 'changed' : ''));
  });
  const count = (p) => (p ? `${p.hops.length} hop${p.hops.length === 1 ? '' : 's'}${p.reached ? '' : ', destination not reached'}` : 'not stored');
  const text = `Path change at ${when}: before ${count(before)}, after ${count(after)}` +
    (changed.length ? `; hop${changed.length > 1 ? 's' : ''} ${changed.join(', ')} changed.` : '.');
  return h('div', {}, h('p', { class: 'small', 'data-path-summary': '' }, text),
    h('div', { class: 'scroll' }, h('table', { class: 'path mono small' },
      h('thead', {}, h('tr', {}, ['Hop', `Before (${c.from})`, `After (${c.to})`, ''].map((x) => h('th', {}, x)))),
      h('tbody', {}, rows))),
    h('p', { class: 'hint' }, '* the hop did not answer; – the path does not reach it.'));
}

function hopTable(d) {
  if (!d.hops || !d.hops.length) return h('p', { class: 'muted' }, 'No hops stored in this range.');
  const now = d.paths && d.paths[d.current];
  return h('div', { class: 'scroll' }, h('table', { class: 'hops mono small' },
    h('thead', {}, h('tr', {}, ['Hop', 'Address now', 'Loss', 'Sent', 'Last', 'Avg', 'Best', 'Worst', 'StDev'].map((c) => h('th', {}, c)))),
    h('tbody', {}, d.hops.map((x) => h('tr', { 'data-hop': x.hop },
      h('td', {}, x.hop), h('td', { class: 'addr' }, now ? hopAddrs(now, x.hop) : '?'), h('td', {}, pct(x.loss)), h('td', {}, x.sent),
      [x.last_ms, x.avg_ms, x.best_ms, x.worst_ms, x.stddev_ms].map((v) => h('td', {}, ms(v))))))),
    h('p', { class: 'hint' }, 'Over the range, per hop: loss of its probes, and its mean RTT per round; addresses of the current path.'));
}

// ---------- run now: a kind's live run, shown as its answers arrive ----------

// Which kinds run live, and what a run does, come from the daemon (GET /api/probes: `live`);
// a run's events describe the table they fill, so one view serves every kind.
let probeKinds = null;
function liveRuns() {
  probeKinds ||= api('GET', '/api/probes').then((d) => Object.fromEntries(d.probes.filter((p) => p.live).map((p) => [p.kind, p.live])))
    .catch((e) => { probeKinds = null; throw e; });
  return probeKinds;
}

// A cell as its column shows it: a number in the column's unit, a text as it is.
function liveCell(v, col) {
  if (v === null || v === undefined) return '–';
  if (typeof v !== 'number') return String(v);
  return col.unit === 'ms' ? ms(v) : col.unit === 'ratio' ? pct(v) : String(v);
}

// The rows of a run, laid out as its start event says (a table, or a list of short items),
// each set by key as it arrives; the run's words (start, status, summary) go to `status`.
function liveView(status) {
  const el = h('div', { class: 'scroll' });
  const rows = new Map();
  let table = null;
  let body = null;
  const start = (t) => {
    table = t;
    body = t.layout === 'list' ? h('ol', { class: 'live-list mono small' }) : h('tbody');
    el.replaceChildren(t.layout === 'list' ? body : h('table', { class: 'hops mono small' },
      h('thead', {}, h('tr', {}, t.columns.map((c) => h('th', {}, c.label)))), body));
  };
  const row = (d) => {
    const cells = d.cells.map((v, i) => liveCell(v, table.columns[i] || {}));
    const item = table.layout === 'list' ? h('li', {}, cells.join(': ')) : h('tr', {}, cells.map((c) => h('td', {}, c)));
    item.dataset[table.key] = d.key;
    if (d.lost) item.classList.add('lost');
    item.hidden = !!d.hidden;
    const old = rows.get(d.key);
    if (old) old.replaceWith(item);
    else body.insertBefore(item, [...body.children].find((r) => Number(r.dataset[table.key]) > d.key) || null);
    rows.set(d.key, item);
  };
  return {
    el,
    add(d) {
      if (d.type === 'start') start(d.table);
      if (d.type === 'row' && table) row(d);
      else if (d.text) status.textContent = d.text;
    },
  };
}

// Reads the run's server-sent events (fetch, since EventSource cannot POST) into `view`.
async function runNow(name, kind, panel, button) {
  if (runAbort) runAbort.abort();
  const ctrl = new AbortController();
  runAbort = ctrl;
  const status = h('p', { class: 'small muted', role: 'status' }, 'Starting…');
  const view = liveView(status);
  panel.replaceChildren(status, view.el);
  button.disabled = true;
  try {
    const r = await fetch(`/api/targets/${encodeURIComponent(name)}/run?kind=${kind}`, {
      method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf || '' }, signal: ctrl.signal,
    });
    if (!r.ok) {
      let data = {};
      try { data = await r.json(); } catch (_) { data = {}; }
      throw new ApiError(r.status, data);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const data = buf.slice(0, i).split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('');
        buf = buf.slice(i + 2);
        if (!data) continue;
        const d = JSON.parse(data);
        view.add(d);
      }
    }
  } catch (e) {
    if (e.name !== 'AbortError') status.textContent = e.message;
  } finally {
    button.disabled = false;
    if (runAbort === ctrl) runAbort = null;
  }
}

function runNowPart(name, probe, live) {
  if (!live) return null;
  const panel = h('div', { class: 'run', 'aria-live': 'polite' });
  const button = h('button', { type: 'button', 'data-run': probe }, 'Run now');
  button.addEventListener('click', () => runNow(name, probe, panel, button));
  return h('div', { class: 'run-now' }, h('div', { class: 'row' }, button, h('span', { class: 'hint' }, ` ${live.what}, shown as the answers arrive`)), panel);
}

// ---------- phases (DNS, TCP, HTTP): each phase's mean per bucket, stacked ----------

// Okabe-Ito colours in the phases' order (told apart with the common colour-vision
// deficiencies), each phase also named in the legend, the tooltip and the summary.
const PHASE_COLOURS = ['#56B4E9', '#E69F00', '#009E73', '#0072B2', '#CC79A7'];

function phaseSummary(d) {
  const ph = d.phases;
  if (!ph.points.length) return `No phases stored in the last ${d.range}.`;
  const parts = ph.names.map((n, i) => [n, ph.mean_ms[i]]).filter(([, v]) => v !== null).map(([n, v]) => `${n} ${ms(v)}`);
  return `Phases over the last ${d.range}, mean per round: ${parts.join(', ')} (${ph.points.length} buckets).`;
}

function phaseChart(d) {
  // Room above the top line for its label, drawn larger at a phone's width.
  const W = 600, H = 170, top = 18, bottom = 22, left = 58;
  const ph = d.phases;
  const el = svg('svg', { class: 'smoke phases', viewBox: `0 0 ${W} ${H}`, role: 'img', 'data-probe': d.probe });
  const title = svg('title', {});
  title.textContent = phaseSummary(d);
  el.append(title);
  const span = Math.max(1, d.to - d.from);
  const bw = Math.max(1.5, (W - left) * d.step_seconds / span);
  const x = (t) => left + ((t - d.from) / span) * (W - left);
  const total = (p) => p.ms.reduce((a, v) => a + (v || 0), 0);
  const max = Math.max(0.01, ...ph.points.map(total)) * 1.1;
  const y = (v) => top + (1 - v / max) * (H - top - bottom);
  for (const f of [0, 1]) {
    el.append(svg('line', { class: 'grid', x1: left, x2: W, y1: y(max * f), y2: y(max * f) }));
    // The top line's label (with its unit) above the line, where a phone's larger text fits.
    const lab = f ? svg('text', { class: 'axis', x: left, y: top - 4 }) : svg('text', { class: 'axis', x: left - 4, y: y(0) + 4, 'text-anchor': 'end' });
    lab.textContent = f ? ms(max) : '0';
    el.append(lab);
  }
  for (const p of ph.points) {
    const g = svg('g', { class: 'phase-pt', 'data-t': p.t, 'data-ms': p.ms.map((v) => (v === null ? '' : v)).join(',') });
    const tip = svg('title', {});
    tip.textContent = `${new Date(p.t * 1000).toLocaleString()}: ` + ph.names.map((n, i) => `${n} ${ms(p.ms[i])}`).join(', ');
    g.append(tip);
    let acc = 0;
    p.ms.forEach((v, i) => {
      if (!v) return;
      g.append(svg('rect', { class: 'phase', x: x(p.t), width: bw, y: y(acc + v), height: Math.max(0.5, y(acc) - y(acc + v)), fill: PHASE_COLOURS[i % PHASE_COLOURS.length] }));
      acc += v;
    });
    el.append(g);
  }
  return el;
}

function phasePart(d) {
  if (!d.phases) return null;
  const ph = d.phases;
  const legend = h('div', { class: 'legend small muted' }, 'Stacked, bottom up: ',
    ph.names.map((n, i) => h('span', { class: 'key' }, swatch(PHASE_COLOURS[i % PHASE_COLOURS.length]), n)));
  return h('div', { class: 'phases-part' }, h('h3', {}, 'Phases'),
    h('p', { class: 'summary small', 'data-phases': '' }, phaseSummary(d)),
    ph.points.length ? [phaseChart(d), legend] : null);
}

// ---------- the latest round: DNS records, HTTP status, TLS certificate ----------

function recordsTable(last) {
  if (!last.records) return null;
  if (!last.records.length) return h('p', { class: 'small muted' }, 'The last answer had no records.');
  const more = last.records_total - last.records.length;
  return h('div', { class: 'scroll' }, h('table', { class: 'records mono small' },
    h('thead', {}, h('tr', {}, ['Name', 'Type', 'TTL', 'Data'].map((c) => h('th', {}, c)))),
    h('tbody', {}, last.records.map((r) => h('tr', {}, h('td', {}, r.name), h('td', {}, r.type), h('td', {}, r.ttl), h('td', { class: 'data' }, r.data))))),
    h('p', { class: 'hint' }, more > 0 ? `${last.records_total} records; the first ${last.records_max} are shown.` : `At most ${last.records_max} records are shown.`));
}

function certLine(last) {
  if (last.cert_not_after === undefined) return null;
  const days = last.cert_days_left;
  const when = new Date(last.cert_not_after * 1000).toLocaleDateString();
  const text = days < 0 ? `TLS certificate expired ${-days} day${days === -1 ? '' : 's'} ago (${when}).` : `TLS certificate expires in ${days} day${days === 1 ? '' : 's'} (${when}).`;
  // The warning is said in words too, not by colour alone.
  return h('p', { class: last.cert_warning ? 'cert warn' : 'cert', 'data-days': days },
    last.cert_warning ? `⚠ ${text} Under ${last.cert_warn_days} days: renew it.` : text);
}

function lastPart(d) {
  const last = d.last;
  // `last` is null (not absent) for a kind that shows its latest round but has none yet.
  if (!last) return last === null ? h('p', { class: 'small muted' }, 'No round since the daemon started: the latest answer shows after the next round.') : null;
  const facts = [];
  if (last.rcode) facts.push(`rcode ${last.rcode}`);
  if (last.status !== undefined) facts.push(`status ${last.status}`);
  for (const k of ['version', 'tls_version', 'transport']) if (last[k]) facts.push(last[k]);
  if (last.server || last.address) facts.push(`from ${last.server || last.address}`);
  // From the store: the latest answer, status or certificate kept before a restart, seen first at `t` (until the next round).
  const when = last.stored ? `Stored before the restart, first seen ${ago(last.t)}` : ago(last.t);
  return h('div', { class: 'last', 'data-last': last.stored ? 'stored' : '' }, h('h3', {}, 'Latest round'),
    h('p', { class: 'small' }, `${when}: ${facts.join(', ') || 'no answer'}.`),
    certLine(last), recordsTable(last));
}

async function probeSection(name, probe) {
  let d;
  let live;
  try {
    [d, live] = await Promise.all([
      api('GET', `/api/targets/${encodeURIComponent(name)}/history?probe=${probe}&range=${targetRange}`),
      liveRuns().then((runs) => runs[probe], () => null),
    ]);
  } catch (e) {
    return h('section', { class: 'card' }, h('h2', {}, probe), h('p', { class: 'ferr' }, e.message));
  }
  const what = d.figure || 'time';
  return h('section', { class: 'card diag', 'data-probe': probe },
    h('h2', {}, `${probe}: ${what}`),
    h('p', { class: 'summary' }, summaryText(d, what)),
    smokeChart(d, what), lossLegend(d),
    runNowPart(name, probe, live),
    d.hops ? hopTable(d) : null,
    d.changes ? changesList(d) : null,
    phasePart(d), lastPart(d));
}

// `#/targets/NAME/RANGE` opens the page on that range (a link to a month, say).
async function showTarget(name, range) {
  if (RANGES.includes(range)) targetRange = range;
  const gen = setView('targets');
  let s;
  try { s = await api('GET', `/api/status?target=${encodeURIComponent(name)}`); } catch (e) { if (e.status !== 401) toast(e.message); return; }
  const t = s.targets[0];
  if (!t) { render(gen, h('div', { class: 'card' }, `No target named ${name}.`)); return; }
  const ranges = h('div', { class: 'ranges', role: 'group', 'aria-label': 'Range' }, RANGES.map((r) => {
    const b = h('button', { type: 'button', class: r === targetRange ? 'primary' : '', 'data-range': r, 'aria-pressed': String(r === targetRange) }, r);
    b.addEventListener('click', () => { targetRange = r; showTarget(name); });
    return b;
  }));
  const head = h('section', { class: 'card' },
    h('div', { class: 'row spread' }, h('h1', {}, t.name),
      h('a', { class: 'button', href: `#/targets/${encodeURIComponent(name)}/edit` }, 'Edit')),
    h('div', { class: 'muted mono small' }, t.host), ranges);
  const sections = await Promise.all(t.probes.map((p) => probeSection(name, p.probe)));
  if (!render(gen, head, ...sections)) return;
  // When the charts were laid out, in ms from the navigation's start (the range benchmark reads it).
  const charts = app.querySelectorAll('svg.smoke');
  if (charts.length) charts[0].getBoundingClientRect();
  for (const c of charts) c.dataset.drawnMs = Math.round(performance.now());
}

// ---------- settings ----------

function linesOf(textarea) {
  return textarea.value.split('\n').map((s) => s.trim()).filter(Boolean);
}

async function showSettings() {
  const gen = setView('settings');
  let s, cfg, tls, rw, store, leds, upd, nodeExp;
  try {
    [s, cfg, tls, rw, store, leds, upd, nodeExp] = await Promise.all(['/api/settings', '/api/config', '/api/tls',
      '/api/config/remote_write', '/api/config/store', '/api/config/leds', '/api/update', '/api/node-exporter'].map((p) => api('GET', p)));
  } catch (e) { if (e.status !== 401) toast(e.message); return; }

  // Password
  const cur = h('input', { type: 'password', autocomplete: 'current-password' });
  const nw = h('input', { type: 'password', autocomplete: 'new-password' });
  const pwButton = h('button', { type: 'submit', class: 'primary' }, 'Change password');
  const pwForm = h('form', { class: 'card', novalidate: true }, h('h2', {}, 'Admin password'),
    h('div', { class: 'cols' }, field('Current password', 'current', cur), field('New password', 'new', nw, `At least ${passwordMin} characters. Other sessions are logged out.`)),
    h('div', { class: 'form-errors' }), pwButton);
  pwForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(pwButton, async () => {
      try {
        const r = await api('POST', '/api/auth/password', { current: cur.value, new: nw.value });
        csrf = r.csrf_token;
        cur.value = ''; nw.value = '';
        showErrors(pwForm, null);
        toast('Password changed');
      } catch (e) { showErrors(pwForm, e); }
    });
  });

  // Access to /metrics, /probe, health; Host names
  const mode = h('select', {}, [['none', 'Open (no authentication)'], ['bearer', 'Bearer token'], ['basic', 'Basic auth']]
    .map(([v, l]) => h('option', { value: v, selected: s.scrape_auth.mode === v }, l)));
  const token = h('input', { type: 'password', autocomplete: 'off', placeholder: s.scrape_auth.secret_set ? '(unchanged)' : '' });
  const user = h('input', { type: 'text', value: s.scrape_auth.username || '', autocomplete: 'off' });
  const pass = h('input', { type: 'password', autocomplete: 'off', placeholder: s.scrape_auth.secret_set ? '(unchanged)' : '' });
  const tokenField = field('Token', 'scrape_auth.token', token, '16 characters or more. Prometheus: authorization: { credentials: … }');
  const userField = field('User name', 'scrape_auth.username', user);
  const passField = field('Password', 'scrape_auth.password', pass, 'Prometheus: basic_auth.');
  const sync = () => {
    tokenField.hidden = mode.value !== 'bearer';
    userField.hidden = passField.hidden = mode.value !== 'basic';
  };
  mode.addEventListener('change', sync);
  sync();
  const allow = h('textarea', { rows: 3, placeholder: '@targets\n192.168.1.0/24' });
  allow.value = s.probe_allowlist.join('\n');
  const hosts = h('textarea', { rows: 2, placeholder: 'probe.example.net' });
  hosts.value = s.allowed_hosts.join('\n');
  const accButton = h('button', { type: 'submit', class: 'primary' }, 'Save access settings');
  const accForm = h('form', { class: 'card', novalidate: true }, h('h2', {}, 'Access'),
    field('/metrics, /probe and health checks', 'scrape_auth.mode', mode, 'Prometheus must be able to scrape; protect them if the LAN is not trusted.'),
    h('div', { class: 'cols' }, tokenField, userField, passField),
    field('/probe allow-list', 'probe_allowlist', allow, 'One per line: address, CIDR block, host name, *.domain, or @targets (the configured targets). Empty: any target.'),
    field('Extra host names for this page', 'allowed_hosts', hosts, 'Addresses, the device name, *.local, *.lan and *.home.arpa always work; add other names you use to reach the device.'),
    h('div', { class: 'form-errors' }), accButton);
  accForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(accButton, async () => {
      const body = { allowed_hosts: linesOf(hosts), probe_allowlist: linesOf(allow), scrape_auth: { mode: mode.value } };
      if (mode.value === 'bearer') body.scrape_auth.token = token.value;
      if (mode.value === 'basic') Object.assign(body.scrape_auth, { username: user.value, password: pass.value });
      try { s = await api('PUT', '/api/settings', body); showErrors(accForm, null); toast('Access settings saved'); } catch (e) { showErrors(accForm, e); }
    });
  });

  // HTTPS
  const httpsListen = h('input', { type: 'text', value: s.https_listen || '', placeholder: '[::]:9443' });
  const httpsButton = h('button', { type: 'submit', class: 'primary' }, 'Save HTTPS setting');
  const certPem = h('textarea', { rows: 3, placeholder: '-----BEGIN CERTIFICATE-----' });
  const keyPem = h('textarea', { rows: 3, placeholder: '-----BEGIN PRIVATE KEY-----' });
  const certButton = h('button', { type: 'button' }, 'Install certificate');
  const tlsState = () => (tls.listening
    ? `Serving HTTPS on ${tls.listening} with ${tls.self_signed ? 'a self-signed' : 'your own'} certificate.`
    : 'HTTPS is off.') + (tls.error ? ` Last error: ${tls.error}` : '');
  const tlsLine = h('p', { class: 'hint' }, tlsState());
  const fp = h('p', { class: 'hint mono' }, tls.fingerprint_sha256 ? `SHA-256 ${tls.fingerprint_sha256}` : '');
  const httpsForm = h('form', { class: 'card', novalidate: true }, h('h2', {}, 'HTTPS'), tlsLine, fp,
    field('Serve HTTPS on', 'https_listen', httpsListen, 'Address and port, e.g. [::]:9443; empty turns HTTPS off. A self-signed certificate is made on first use: compare its fingerprint with the one your browser shows.'),
    h('div', { class: 'form-errors' }), httpsButton,
    h('details', {}, h('summary', {}, 'Use your own certificate'),
      h('div', { class: 'cols' }, field('Certificate chain (PEM)', 'cert_pem', certPem), field('Private key (PEM)', 'key_pem', keyPem)),
      certButton));
  const refreshTls = async () => {
    tls = await api('GET', '/api/tls');
    tlsLine.textContent = tlsState();
    fp.textContent = tls.fingerprint_sha256 ? `SHA-256 ${tls.fingerprint_sha256}` : '';
  };
  httpsForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(httpsButton, async () => {
      const body = { allowed_hosts: s.allowed_hosts, probe_allowlist: s.probe_allowlist, https_listen: httpsListen.value.trim() || null };
      try { s = await api('PUT', '/api/settings', body); showErrors(httpsForm, null); toast('HTTPS setting saved'); await refreshTls(); } catch (e) { showErrors(httpsForm, e); }
    });
  });
  certButton.addEventListener('click', () => busy(certButton, async () => {
    try {
      await api('PUT', '/api/tls', { cert_pem: certPem.value, key_pem: keyPem.value });
      certPem.value = ''; keyPem.value = '';
      showErrors(httpsForm, null);
      toast('Certificate installed');
      await refreshTls();
    } catch (e) { showErrors(httpsForm, e); }
  }));

  const [rwCard, storeCard, ledsCard] = deviceSections(rw, store, leds);

  // The config file as it is on disk.
  const reloadButton = h('button', { type: 'button' }, 'Reload from file');
  reloadButton.addEventListener('click', () => busy(reloadButton, async () => {
    try { await api('POST', '/api/reload'); toast('Config reloaded'); } catch (e) { toast(`${e.message} ${e.errors.map((x) => x.message).join('; ')}`); }
  }));
  const file = h('section', { class: 'card' }, h('div', { class: 'row spread' }, h('h2', {}, 'Config file'), reloadButton),
    h('p', { class: 'hint' }, cfg.embedded ? 'Built-in default (no file saved yet).' : cfg.default ? `${cfg.default} (default; the first save creates ${cfg.path})` : cfg.path,
      cfg.backup ? ` · previous version: ${cfg.backup}` : ''),
    cfg.errors.length ? h('ul', { class: 'errors' }, cfg.errors.map((e) => h('li', {}, `line ${e.line}: ${e.field} ${e.message}`))) : null,
    h('pre', { class: 'file' }, cfg.text));

  render(gen, h('h1', {}, 'Settings'), rwCard, storeCard, ledsCard, pwForm, accForm, httpsForm, updateCard(upd),
    nodeExporterCard(nodeExp), file);
}

// Settings → Local metrics (GET /api/node-exporter; only on the image): Debian's node exporter,
// switched on or off by the image's root helper, which this card polls until it has.
function nodeExporterLine(s, want) {
  if (want !== null && want !== undefined) return `Switching ${want ? 'on' : 'off'}…`;
  const failed = s.failed ? ' The last switch failed: the device\'s journal says why (journalctl -u vantage-image-node-exporter).' : '';
  return (s.enabled ? `On (${s.active}): ` : 'Off.') + failed;
}

function nodeExporterCard(ne) {
  if (!ne || !ne.available) return null;
  const line = h('p', { id: 'node-exporter-state' });
  const button = h('button', { type: 'submit', class: 'primary', id: 'node-exporter-switch' });
  const show = (s, want) => {
    ne = s;
    const url = `http://${location.hostname}:${s.port}/metrics`;
    line.replaceChildren(nodeExporterLine(s, want), s.enabled && (want === null || want === undefined) ? h('a', { href: url }, url) : null);
    button.textContent = s.enabled ? 'Switch off' : 'Switch on';
  };
  show(ne, ne.pending);
  const form = h('form', { class: 'card', novalidate: true, id: 'node-exporter' }, h('h2', {}, 'Local metrics'), line,
    h('p', { class: 'hint' }, 'Node exporter with its textfile collector: the machine\'s own metrics, plus those of local scripts (BGP, IPsec, temperature…) that write *.prom files into ',
      h('code', {}, ne.textfile_directory), `, on port ${ne.port} of every address, without authentication. Off by default; the choice survives reboots and updates.`),
    h('div', { class: 'form-errors' }), button);
  // Polls until the helper applied `want` or failed; bounded by count, not time. A failure
  // recorded before this switch reads the same until the helper has run, so it counts only
  // when seen twice with nothing pending.
  const follow = (want, gen) => busy(button, async () => {
    let settled = 0;
    try {
      for (let i = 0; i < 30 && gen === viewGeneration; i++) {
        await new Promise((r) => { setTimeout(r, 1000); });
        const s = await api('GET', '/api/node-exporter');
        settled = s.pending === null ? settled + 1 : 0;
        if (settled && (s.enabled === want || (s.failed && settled > 1))) {
          show(s);
          if (s.enabled === want) toast(`Local metrics switched ${want ? 'on' : 'off'}`);
          return;
        }
        show(s, want);
      }
      if (gen === viewGeneration) line.textContent = 'Not applied yet: the device\'s helper has not taken the switch up (journalctl -u vantage-image-node-exporter).';
    } catch (e) { showErrors(form, e); }
  });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const gen = viewGeneration;
    const want = !ne.enabled;
    try {
      show(await busy(button, () => api('PUT', '/api/node-exporter', { enabled: want })), want);
      showErrors(form, null);
    } catch (e) { showErrors(form, e); return; }
    follow(want, gen);
  });
  // Opened while a switch is on its way: follow it too.
  if (ne.pending !== null && ne.pending !== undefined) follow(ne.pending, viewGeneration);
  return form;
}

// The image's A/B state (GET /api/update's `image`, null off an A/B image: then nothing is said
// about slots): the slot running, its build, on trial or marked good, what the last trial did.
function slotLine(img) {
  const state = { good: 'marked good', trial: 'on trial (the health check decides)', unknown: 'state unknown' }[img.state] || img.state;
  const build = [img.version, img.build ? `build ${img.build}` : null].filter(Boolean).join(', ');
  return `Slot ${img.booted}${build ? ` (${build})` : ''}, ${state}`;
}

function lastTrialLine(t) {
  const what = { good: `${t.slot} (${t.version}) passed its trial`, rollback: `rolled back from ${t.slot} (${t.version})`,
    kept: `${t.slot} (${t.version}) was not ready but kept: no good slot to go back to` }[t.result] || t.result;
  const reason = t.reason ? `: ${t.reason.replace(/-/g, ' ')}` : '';
  return `Last update: ${what} at ${new Date(t.at * 1000).toLocaleString()}${reason}`;
}

// Settings → Update: the bundle is the request body (streamed by the browser), its signature is
// checked before the answer, then the install runs on the device while this card polls.
function updateCard(upd) {
  const slot = upd.image ? h('p', { id: 'update-slot' }, slotLine(upd.image),
    upd.image.last ? h('br') : null, upd.image.last ? lastTrialLine(upd.image.last) : null) : null;
  const line = h('p', { class: 'hint' });
  const bar = h('progress', { max: 100, value: 0, hidden: true });
  const show = (u) => {
    const what = { idle: 'No update running.', receiving: `Receiving: ${u.bytes} bytes`, checking: 'Checking the signature…',
      installing: `Installing ${u.version || ''}: ${u.percent ?? 0}% ${u.message}`, installed: u.source === 'fleet' ? `Installed ${u.version || ''} (fleet update): ${u.message}.` : `Installed ${u.version || ''}: reboot to start it (on trial).`,
      failed: `Failed: ${u.message}` }[u.phase];
    line.textContent = what || u.phase;
    bar.hidden = u.phase !== 'installing';
    bar.value = u.percent || 0;
  };
  show(upd);
  const poll = () => {
    clearInterval(refreshTimer);
    refreshTimer = setInterval(async () => {
      try {
        const u = await api('GET', '/api/update');
        show(u);
        if (u.phase !== 'installing' && u.phase !== 'checking') clearInterval(refreshTimer);
      } catch (_) { clearInterval(refreshTimer); }
    }, 2000);
  };
  if (upd.phase === 'installing' || upd.phase === 'checking') poll();
  const file = h('input', { type: 'file', accept: '.raucb' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Upload and install');
  const form = h('form', { class: 'card', novalidate: true }, h('h2', {}, 'Update'), slot, line, bar,
    field('Update bundle', 'bundle', file, 'A vantage-VERSION-ARCH.raucb signed with this image\'s key. It is installed into the other slot and starts at the next boot, on trial: the device falls back by itself if it does not come up.'),
    h('div', { class: 'form-errors' }), button);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (!file.files.length) { showErrors(form, { errors: [{ field: 'bundle', message: 'choose a file' }] }); return; }
    busy(button, () => new Promise((resolve) => {
      // XMLHttpRequest, not fetch: it reports upload progress.
      const x = new XMLHttpRequest();
      x.open('POST', '/api/update');
      x.setRequestHeader('X-CSRF-Token', csrf || '');
      x.setRequestHeader('Content-Type', 'application/octet-stream');
      x.upload.onprogress = (e) => show({ phase: 'receiving', bytes: e.loaded });
      x.onload = () => {
        let body = {};
        try { body = JSON.parse(x.responseText); } catch (_) { body = {}; }
        if (x.status === 202) { showErrors(form, null); show(body); poll(); } else {
          showErrors(form, new ApiError(x.status, body));
          api('GET', '/api/update').then(show).catch(() => {});
        }
        resolve();
      };
      x.onerror = () => { showErrors(form, new ApiError(0, { error: 'the upload was cut' })); resolve(); };
      x.send(file.files[0]);
    }));
  });
  return form;
}

// ---------- settings kept in the config file: remote_write, store, LEDs ----------

const SECRET = '<secret>';

// A trimmed text value, or undefined when empty (the key is then left out: its default applies).
function textOf(input) {
  const v = input.value.trim();
  return v === '' ? undefined : v;
}

// Whole numbers go as numbers; anything else as typed, so the server's message names the problem.
function numberOf(input) {
  const v = textOf(input);
  return v !== undefined && /^-?\d+$/.test(v) ? Number(v) : v;
}

function prune(obj) {
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === false) delete obj[k];
    else if (v && typeof v === 'object' && !Array.isArray(v)) {
      prune(v);
      if (!Object.keys(v).length) delete obj[k];
    }
  }
  return obj;
}

function parseLabels(textarea) {
  const out = {};
  for (const line of textarea.value.split('\n')) {
    if (!line.trim()) continue;
    const i = line.indexOf('=');
    if (i < 0) out[line.trim()] = '';
    else out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

// Checks the form with the server's own rules (a dry run: nothing is saved) as fields change,
// so the messages next to the fields are the ones `vantage check-config` gives.
// Only fields the user has changed get their messages, so a half-filled form is not all red.
function liveCheck(form, request) {
  let timer = null;
  let seq = 0;
  const touched = new Set();
  const isTouched = (f) => [...touched].some((t) => f === t || f.startsWith(`${t}.`) || f.startsWith(`${t}[`));
  form.addEventListener('change', (ev) => {
    if (ev.target && ev.target.name) touched.add(ev.target.name);
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const mine = ++seq;
      const [method, path, body] = request();
      try {
        await api(method, `${path}?dry_run=true`, body);
        if (mine === seq) showErrors(form, null);
      } catch (e) {
        if (mine !== seq || e.status !== 422) return;
        const errors = e.errors.filter((x) => isTouched(x.field));
        showErrors(form, errors.length ? { message: e.message, errors } : null);
      }
    }, 250);
  });
}

function restartNote(section, what) {
  return section.restart_required
    ? h('div', { class: 'banner', 'data-restart': what }, `The ${what} settings in the file differ from what runs: they take effect when the daemon restarts.`)
    : null;
}

function saved(r) {
  toast(r.message || 'Saved');
  showSettings();
}

// `existing`: {name, raw} of the endpoint being edited, or null for a new one.
function endpointForm(existing, rw, onCancel) {
  const raw = existing ? existing.raw : {};
  const ba = raw.basic_auth || {};
  const tlsRaw = raw.tls || {};
  const d = rw.defaults;
  const input = (type, value, placeholder) => h('input', { type, value: value ?? '', placeholder: placeholder ?? null, autocomplete: 'off', autocapitalize: 'off' });
  const name = input('text', raw.name, existing ? existing.name : 'host:port of the URL');
  const url = input('text', raw.url, 'prometheus.example:9090/api/v1/write');
  const mode = h('select', {}, [['none', 'None'], ['basic', 'Basic auth'], ['bearer', 'Bearer token']]
    .map(([v, l]) => h('option', { value: v, selected: (raw.basic_auth ? 'basic' : raw.bearer_token || raw.bearer_token_file ? 'bearer' : 'none') === v }, l)));
  // Secrets are never sent to the page: an empty box with "(unchanged)" keeps the stored one.
  const secretInput = (value) => {
    const el = input('password', value === SECRET ? '' : value, value === SECRET ? '(unchanged)' : null);
    el.dataset.stored = value === SECRET ? '1' : '';
    return el;
  };
  const secretOf = (el) => textOf(el) ?? (el.dataset.stored ? SECRET : undefined);
  const user = input('text', ba.username);
  const pass = secretInput(ba.password);
  const passFile = input('text', ba.password_file, '/etc/vantage/remote-write.pass');
  const token = secretInput(raw.bearer_token);
  const tokenFile = input('text', raw.bearer_token_file, '/etc/vantage/remote-write.token');
  const timeout = input('text', raw.timeout, d.timeout);
  const labels = h('textarea', { rows: 2, placeholder: 'site=office' });
  labels.value = Object.entries(raw.labels || {}).map(([k, v]) => `${k}=${v}`).join('\n');
  const ca = input('text', tlsRaw.ca_file, 'system roots');
  const cert = input('text', tlsRaw.cert_file);
  const key = input('text', tlsRaw.key_file);
  const insecure = h('input', { type: 'checkbox', checked: !!tlsRaw.insecure_skip_verify });
  const perSend = input('text', raw.max_samples_per_send, String(d.max_samples_per_send));
  const perSecond = input('text', raw.max_samples_per_second, String(d.max_samples_per_second));
  const minBackoff = input('text', raw.min_backoff, d.min_backoff);
  const maxBackoff = input('text', raw.max_backoff, d.max_backoff);
  const send = h('select', {}, [['all', 'Every round (push only)'], ['gaps', 'Only what no scrape covered (scrape + backfill)']]
    .map(([v, l]) => h('option', { value: v, selected: (raw.send || 'all') === v }, l)));
  const scrapeGap = input('text', raw.scrape_gap, d.scrape_gap);
  const basicFields = h('div', {}, h('div', { class: 'cols' }, field('User name', 'basic_auth.username', user),
    field('Password', 'basic_auth.password', pass), field('…or password file', 'basic_auth.password_file', passFile, 'Read when the config loads.')),
  h('div', { class: 'ferr', 'data-for': 'basic_auth' }));
  const bearerFields = h('div', { class: 'cols' }, field('Token', 'bearer_token', token),
    field('…or token file', 'bearer_token_file', tokenFile, 'Read when the config loads.'));
  const sync = () => { basicFields.hidden = mode.value !== 'basic'; bearerFields.hidden = mode.value !== 'bearer'; };
  mode.addEventListener('change', sync);
  sync();
  const saveButton = h('button', { type: 'submit', class: 'primary', id: 'rw-save' }, existing ? 'Save endpoint' : 'Add endpoint');
  const cancel = h('button', { type: 'button' }, 'Cancel');
  cancel.addEventListener('click', onCancel);
  const form = h('form', { class: 'subform', id: 'rw-form', novalidate: true },
    h('h3', {}, existing ? `Edit ${existing.name}` : 'New endpoint'),
    h('div', { class: 'cols' },
      field('URL', 'url', url, 'The full remote_write URL, http or https, of Prometheus, Mimir, VictoriaMetrics, …'),
      field('Name', 'name', name, 'Names it in metrics; default: host and port of the URL.'),
      field('Authentication', 'auth', mode)),
    basicFields, bearerFields,
    h('div', { class: 'cols' },
      field('Timeout', 'timeout', timeout, `Per request; default ${d.timeout}.`),
      field('Labels', 'labels', labels, 'One name=value per line, added to every series sent.')),
    h('div', { class: 'cols' },
      field('Send', 'send', send, 'Gaps: this Prometheus also scrapes the device; only rounds no scrape covered are sent.'),
      field('Scrape gap', 'scrape_gap', scrapeGap, `Gaps mode: scrapes further apart leave a gap that is sent; default ${d.scrape_gap}.`)),
    h('details', {}, h('summary', {}, 'TLS and sending limits'),
      h('div', { class: 'cols' },
        field('CA file', 'tls.ca_file', ca), field('Client certificate file', 'tls.cert_file', cert),
        field('Client key file', 'tls.key_file', key)),
      h('label', { class: 'inline' }, insecure, ' Skip certificate verification (insecure)'),
      h('div', { class: 'ferr', 'data-for': 'tls.insecure_skip_verify' }),
      h('div', { class: 'cols' },
        field('Samples per request', 'max_samples_per_send', perSend),
        field('Samples per second', 'max_samples_per_second', perSecond, '0: no limit.'),
        field('Min backoff', 'min_backoff', minBackoff), field('Max backoff', 'max_backoff', maxBackoff))),
    h('div', { class: 'form-errors' }),
    h('div', { class: 'row' }, saveButton, cancel));
  const collect = () => prune({
    name: textOf(name),
    url: textOf(url) ?? '',
    basic_auth: mode.value === 'basic' ? { username: user.value.trim(), password: secretOf(pass), password_file: textOf(passFile) } : undefined,
    bearer_token: mode.value === 'bearer' ? secretOf(token) : undefined,
    bearer_token_file: mode.value === 'bearer' ? textOf(tokenFile) : undefined,
    timeout: textOf(timeout),
    labels: parseLabels(labels),
    tls: { ca_file: textOf(ca), cert_file: textOf(cert), key_file: textOf(key), insecure_skip_verify: insecure.checked },
    max_samples_per_send: numberOf(perSend),
    max_samples_per_second: numberOf(perSecond),
    min_backoff: textOf(minBackoff),
    max_backoff: textOf(maxBackoff),
    send: send.value === 'all' && !raw.send ? undefined : send.value,
    scrape_gap: textOf(scrapeGap),
  });
  const target = () => (existing
    ? ['PUT', `/api/config/remote_write/${encodeURIComponent(existing.name)}`]
    : ['POST', '/api/config/remote_write']);
  liveCheck(form, () => [...target(), collect()]);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(saveButton, async () => {
      const [method, path] = target();
      try { saved(await api(method, path, collect(), { 'If-Match': `"${rw.revision}"` })); } catch (e) { showErrors(form, e); }
    });
  });
  return form;
}

function remoteWriteCard(rw) {
  const slot = h('div', {});
  const open = (existing) => {
    slot.replaceChildren(endpointForm(existing, rw, () => slot.replaceChildren()));
    slot.querySelector('input').focus();
  };
  const rows = rw.endpoints.map((e) => {
    const st = e.state;
    const state = st ? (st.up ? `sending · ${st.samples_sent} sent · ${st.backlog} waiting` : `failing${st.last_error ? `: ${st.last_error}` : ''} · ${st.backlog} waiting`)
      : e.running ? 'starting' : 'not running';
    const edit = h('button', { type: 'button', 'data-rw-edit': e.name }, 'Edit');
    edit.addEventListener('click', () => open(e));
    const del = h('button', { type: 'button', class: 'danger', 'data-rw-delete': e.name }, 'Delete');
    del.addEventListener('click', () => {
      if (!confirm(`Delete the endpoint ${e.name}? Nothing more is sent to it.`)) return;
      busy(del, async () => {
        try { saved(await api('DELETE', `/api/config/remote_write/${encodeURIComponent(e.name)}`, undefined, { 'If-Match': `"${rw.revision}"` })); } catch (err) { toast(err.message); }
      });
    });
    return h('tr', { 'data-endpoint': e.name },
      h('td', { class: 'endpoint' },
        h('div', { class: 'row' }, h('span', { class: `dot ${st ? (st.up ? 'up' : 'down') : ''}` }), h('b', {}, e.name)),
        h('div', { class: 'mono small' }, e.raw.url),
        h('div', { class: 'small muted' }, state)),
      h('td', { class: 'actions' }, edit, ' ', del));
  });
  const add = h('button', { type: 'button', class: 'primary', id: 'rw-add' }, 'Add endpoint');
  add.addEventListener('click', () => open(null));
  return h('section', { class: 'card', id: 'remote-write' },
    h('div', { class: 'row spread' }, h('h2', {}, 'Remote write'), add),
    h('p', { class: 'hint' }, 'Where the stored samples are sent (Prometheus remote_write). Changes apply at once; rounds measured while an endpoint is unreachable are sent when it is back.'),
    rw.store_open ? null : h('div', { class: 'banner' }, 'The sample store is not open (see the log): nothing is sent until it is.'),
    rows.length ? h('table', {}, h('tbody', {}, rows)) : h('p', { class: 'muted' }, 'No endpoints: samples stay on the device.'),
    slot);
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n < 10 && i ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

function storeCard(store) {
  const raw = store.raw || {};
  const d = store.defaults;
  const input = (value, placeholder) => h('input', { type: 'text', value: value ?? '', placeholder, autocomplete: 'off' });
  const maxSize = input(raw.max_size, String(d.max_size));
  const maxAge = input(raw.max_age, d.max_age);
  const backend = h('select', {}, h('option', { value: '' }, `default (${d.backend})`),
    store.limits.backends.map((b) => h('option', { value: b, selected: raw.backend === b }, b)));
  const commitInterval = input(raw.commit_interval, d.commit_interval);
  const commitSamples = input(raw.commit_samples, String(d.commit_samples));
  const maxPending = input(raw.max_pending, String(d.max_pending));
  const saveButton = h('button', { type: 'submit', class: 'primary', id: 'store-save' }, 'Save store settings');
  const st = store.stats;
  const form = h('form', { class: 'card', id: 'store-form', novalidate: true }, h('h2', {}, 'Sample store'),
    st ? h('p', { class: 'hint', id: 'store-state' }, `${st.samples} rounds on disk, ${bytes(st.disk_bytes)} of ${store.running ? store.running.max_size : '–'}`
      + ` · oldest ${st.oldest ? ago(st.oldest) : 'none yet'} · ${st.healthy ? 'healthy' : `failing: ${st.error}`}`)
      : h('div', { class: 'banner' }, 'The sample store is not open (see the log).'),
    restartNote(store, '[store]'),
    h('div', { class: 'cols' },
      field('Size limit', 'store.max_size', maxSize, `The oldest rounds go first beyond this; e.g. 4GiB, 500MB. ${store.limits.max_size}.`),
      field('Keep rounds for', 'store.max_age', maxAge, 'e.g. 30d, 12h.')),
    h('details', {}, h('summary', {}, 'Engine and commits'),
      h('div', { class: 'cols' },
        field('Engine', 'store.backend', backend, 'Each engine keeps its own files.'),
        field('Commit at least every', 'store.commit_interval', commitInterval),
        field('…or after this many rounds', 'store.commit_samples', commitSamples),
        field('Rounds held while the disk fails', 'store.max_pending', maxPending))),
    h('p', { class: 'hint' }, 'Read when the daemon starts: a change is saved now and applies after a restart.'),
    h('div', { class: 'form-errors' }), saveButton);
  const collect = () => prune({
    backend: backend.value || undefined,
    max_size: numberOf(maxSize),
    max_age: textOf(maxAge),
    commit_interval: textOf(commitInterval),
    commit_samples: numberOf(commitSamples),
    max_pending: numberOf(maxPending),
  });
  liveCheck(form, () => ['PUT', '/api/config/store', collect()]);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(saveButton, async () => {
      try { saved(await api('PUT', '/api/config/store', collect(), { 'If-Match': `"${store.revision}"` })); } catch (e) { showErrors(form, e); }
    });
  });
  return form;
}

function ledsCard(leds) {
  const raw = leds.raw || {};
  const d = leds.defaults;
  const input = (type, value, placeholder) => h('input', { type, value: value ?? '', placeholder: placeholder ?? null, autocomplete: 'off' });
  const backend = h('select', {}, h('option', { value: '' }, 'none (no LEDs)'),
    leds.backends.filter((b) => b !== 'none').map((b) => h('option', { value: b, selected: raw.backend === b }, b)));
  const sysfsRoot = input('text', raw.sysfs_root, d.sysfs_root);
  const identify = input('text', raw.identify_timeout, d.identify_timeout);
  const stale = input('text', raw.stale_after, d.stale_after);
  let list = (raw.led || []).map((l) => ({ ...l }));
  const rowsBox = h('div', {});
  const addLed = h('button', { type: 'button', id: 'led-add' }, 'Add LED');
  const readRows = () => {
    rowsBox.querySelectorAll('[data-led]').forEach((row) => {
      const i = Number(row.dataset.led);
      const q = (k) => row.querySelector(`[name="leds.led[${i}].${k}"]`);
      list[i] = prune({ role: q('role').value, name: textOf(q('name')), pin: numberOf(q('pin')), active_low: q('active_low').checked });
    });
  };
  const drawRows = () => {
    rowsBox.replaceChildren(...list.map((l, i) => {
      const role = h('select', { name: `leds.led[${i}].role` }, leds.roles.map((r) => h('option', { value: r, selected: l.role === r }, r)));
      const remove = h('button', { type: 'button', class: 'danger small' }, 'Remove');
      remove.addEventListener('click', () => { readRows(); list.splice(i, 1); drawRows(); form.dispatchEvent(new Event('change')); });
      const low = h('input', { type: 'checkbox', name: `leds.led[${i}].active_low`, checked: !!l.active_low });
      return h('fieldset', { 'data-led': i }, h('legend', {}, `LED ${i + 1}`),
        h('div', { class: 'cols' },
          field('Shows', `leds.led[${i}].role`, role),
          field('Name', `leds.led[${i}].name`, input('text', l.name, 'sysfs: the LED directory')),
          field('GPIO pin (BCM)', `leds.led[${i}].pin`, input('text', l.pin, 'gpio backend'))),
        h('label', { class: 'inline' }, low, ' Lit when the pin is low'), remove,
        h('div', { class: 'ferr', 'data-for': `leds.led[${i}]` }));
    }));
    addLed.disabled = list.length >= 3;
  };
  addLed.addEventListener('click', () => { readRows(); list.push({ role: ['health', 'problem', 'status'][list.length] || 'status' }); drawRows(); });
  const saveButton = h('button', { type: 'submit', class: 'primary', id: 'leds-save' }, 'Save LED settings');
  const state = leds.state && leds.state.leds && leds.state.leds.length
    ? leds.state.leds.map((l) => `${l.label} (${l.role}): ${l.pattern.replace(/_/g, ' ')}`).join(', ') : 'no LEDs driven now';
  const form = h('form', { class: 'card', id: 'leds-form', novalidate: true }, h('h2', {}, 'Status LEDs'),
    h('p', { class: 'hint' }, `Now: ${state}.`),
    restartNote(leds, '[leds]'),
    field('Driven by', 'leds.backend', backend, 'sysfs: the kernel LED class (e.g. gpio-leds in the device tree); gpio: Raspberry Pi pins; log: development.'),
    rowsBox, h('div', { class: 'ferr', 'data-for': 'leds.led' }), addLed,
    h('details', {}, h('summary', {}, 'Timing and sysfs'),
      h('div', { class: 'cols' },
        field('sysfs root', 'leds.sysfs_root', sysfsRoot), field('Identify blinks for', 'leds.identify_timeout', identify),
        field('"Not responding" after', 'leds.stale_after', stale))),
    h('p', { class: 'hint' }, 'The LEDs are opened when the daemon starts: a change is saved now and applies after a restart.'),
    h('div', { class: 'form-errors' }), saveButton);
  drawRows();
  const collect = () => {
    readRows();
    return prune({
      backend: backend.value || undefined,
      sysfs_root: textOf(sysfsRoot),
      identify_timeout: textOf(identify),
      stale_after: textOf(stale),
      led: list.length ? list : undefined,
    });
  };
  liveCheck(form, () => ['PUT', '/api/config/leds', collect()]);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(saveButton, async () => {
      try { saved(await api('PUT', '/api/config/leds', collect(), { 'If-Match': `"${leds.revision}"` })); } catch (e) { showErrors(form, e); }
    });
  });
  return form;
}

function deviceSections(rw, store, leds) {
  return [remoteWriteCard(rw), storeCard(store), ledsCard(leds)];
}

// ---------- routing ----------

// Navigates to `hash`, rendering once (a hash change renders through the hashchange event).
function go(hash) {
  if (location.hash === hash || (!location.hash && hash === '')) route();
  else location.hash = hash;
}

async function route() {
  const gen = setView(null);
  let state;
  try { state = await api('GET', '/api/auth/state'); } catch (e) {
    render(gen, h('div', { class: 'card' }, `Cannot reach the device: ${e.message}`));
    return;
  }
  // A newer navigation started while this one waited: it renders, not us.
  if (gen !== viewGeneration) return;
  passwordMin = state.password_min_chars || passwordMin;
  document.getElementById('device-name').textContent = state.hostname || '';
  const nav = document.getElementById('nav');
  nav.hidden = !state.logged_in;
  if (state.error && !state.logged_in) {
    render(gen, h('div', { class: 'card narrow banner error' }, h('h1', {}, 'Cannot log in'), h('p', {}, state.error)));
    return;
  }
  if (state.setup_required) return showSetup(state);
  if (!state.logged_in) return showLogin();
  csrf = state.csrf_token;
  const [, view, sub, action] = (location.hash || '#/status').split('/').map(decodeURIComponent);
  if (view === 'targets') return showTargets(sub, action);
  if (view === 'settings') return showSettings();
  return showStatus();
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await api('POST', '/api/auth/logout'); } catch (_) { /* the session may be gone already */ }
  csrf = null;
  go('');
});
window.addEventListener('hashchange', route);
route();
