// Tocsin operator console: one page, plain ES modules, the REST API of docs/openapi.yaml
// and its Server-Sent Events. Every text node is set with textContent (never innerHTML)
// except the bundled map.svg.
import { t, lang, setLang, applyI18n } from './i18n.js';

const $ = (sel, root = document) => root.querySelector(sel);
const SEVERITIES = ['critical', 'high', 'medium', 'low', 'info'];
const STATES = ['pending', 'firing', 'escalated', 'acknowledged', 'silenced', 'resolved', 'expired'];
const CLOSED = new Set(['resolved', 'expired']);
const OUTAGE_TYPES = new Set(['heating.outage', 'heating.suspected_outage', 'heating.suspected_area_outage']);
const LEVELS = ['district', 'street', 'community', 'none'];

const S = {
  me: null,               // {user, role, csrf, expires_at}
  alerts: new Map(),      // id -> AlertSummary
  fresh: new Set(),       // ids of new critical alerts not yet looked at
  kpis: null,
  incidents: [],
  detail: null,           // AlertDetail shown in the side panel
  view: 'alerts',
  es: null,
  lastEventId: '',
  sound: localStorage.getItem('tocsin.sound') === 'on',
  audio: null,
};

// ------------------------------------------------------------------ helpers

// el('div', {class: 'x', testid: 'y', onclick}, child, 'text', ...)
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'testid') e.dataset.testid = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) e.append(c instanceof Node ? c : String(c));
  return e;
}

const pad = (n) => String(n).padStart(2, '0');
// Times in the browser's own time zone.
function fmtTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
// In the list: the time alone for today, else the date too.
function fmtShort(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return iso || '';
  const full = fmtTime(iso);
  return d.toDateString() === new Date().toDateString() ? full.slice(11) : full.slice(0, 16);
}
function fmtAge(iso) {
  const s = Math.max(0, Math.floor((Date.now() - new Date(iso)) / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h ${pad(m % 60)}m` : `${Math.floor(h / 24)}d ${h % 24}h`;
}
const fmtNum = (v) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(3).replace(/0+$/, '')) : String(v));
const sevBadge = (s) => el('span', { class: `sev sev-${s}`, testid: 'severity' }, t(`sev.${s}`, s));
const stateBadge = (s) => el('span', { class: `state state-${s}`, testid: 'alert-state' }, t(`state.${s}`, s));
const isOpen = (a) => !CLOSED.has(a.state);
function locationText(l) {
  if (!l) return '';
  return [l.building || l.community || l.street || l.district, l.grid, l.network_id].filter(Boolean).join(' · ');
}
function households(a) {
  const v = a.labels?.households;
  if (v) return Number(v);
  const m = /影响\s*(\d+)\s*户|（(\d+)\s*户）|(\d+)\s*households/.exec(a.title || '');
  return m ? Number(m[1] || m[2] || m[3]) : null;
}
function levelOf(a) {
  const m = /(community|street|district)\s*层级|to the (community|street|district) level/.exec(a.title || '');
  return a.labels?.level || (m && (m[1] || m[2])) || 'none';
}

// ------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && S.me?.csrf) headers['X-CSRF-Token'] = S.me.csrf;
  const r = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (r.status === 401 && path !== '/api/v1/login' && S.me) { leave(); }
  if (!r.ok) throw new ApiError(r.status, data?.error || r.statusText);
  return data;
}

// Coalesces bursts of calls into one, `ms` after the first.
function debounce(fn, ms) {
  let timer = null;
  return () => { if (!timer) timer = setTimeout(() => { timer = null; fn(); }, ms); };
}

// ------------------------------------------------------------------ session

async function start() {
  setLang(lang());
  applyI18n();
  wireStatic();
  try {
    enter(await api('GET', '/api/v1/me'));
  } catch {
    showLogin();
  }
}

function showLogin() {
  $('#login').hidden = false;
  $('#app').hidden = true;
  $('#kpis').hidden = true;
  $('#detail').hidden = true;
  $('#logout').hidden = true;
  $('#sound').hidden = true;
  $('#whoami').textContent = '';
  $('#live').textContent = '';
  $('[data-testid=login-user]').focus();
}

function enter(me) {
  S.me = me;
  document.body.dataset.role = me.role;
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#kpis').hidden = false;
  $('#logout').hidden = false;
  $('#sound').hidden = false;
  $('[data-testid=tab-audit]').hidden = me.role !== 'admin';
  renderChrome();
  connect();
  loadAll();
}

// The session is gone (logout or 401): back to the login form.
function leave() {
  S.me = null;
  pollClocks(false);
  if (S.es) S.es.close();
  S.es = null;
  S.lastEventId = '';
  S.alerts.clear();
  S.fresh.clear();
  S.detail = null;
  delete document.body.dataset.role;
  document.body.classList.remove('detail-open');
  $('#alert-rows').replaceChildren();
  showLogin();
}

function renderChrome() {
  if (!S.me) return;
  $('#whoami').textContent = `${S.me.user} (${t(`role.${S.me.role}`, S.me.role)})`;
  $('#sound').textContent = S.sound ? t('sound.on') : t('sound.off');
  $('#sound').dataset.on = S.sound ? 'true' : 'false';
}

// ------------------------------------------------------------------ live updates

function setLive(on) {
  const l = $('#live');
  l.textContent = on ? t('live.on') : t('live.off');
  l.className = on ? 'live on' : 'live off';
  l.dataset.on = on ? 'true' : 'false';
}

function connect() {
  if (S.es) S.es.close();
  const url = '/api/v1/events' + (S.lastEventId ? `?last_event_id=${encodeURIComponent(S.lastEventId)}` : '');
  const es = new EventSource(url);
  S.es = es;
  const track = (e) => { if (e.lastEventId) S.lastEventId = e.lastEventId; };
  es.addEventListener('open', () => setLive(true));
  es.addEventListener('hello', (e) => { track(e); setLive(true); loadAll(); });
  es.addEventListener('reset', (e) => { track(e); loadAll(); });
  es.addEventListener('alert', (e) => {
    track(e);
    const a = JSON.parse(e.data);
    upsert(a, true);
    if (S.detail?.id === a.id) refreshDetailSoon();
    refreshKpisSoon();
    if (a.type?.startsWith('heating.')) refreshIncidentsSoon();
    if (S.view === 'audit') refreshAuditSoon();
  });
  es.addEventListener('notification', (e) => {
    track(e);
    const n = JSON.parse(e.data);
    if (S.detail?.id === n.alert) refreshDetailSoon();
    refreshKpisSoon();
  });
  es.addEventListener('error', async () => {
    setLive(false);
    if (es.readyState !== EventSource.CLOSED || S.es !== es) return;  // the browser reconnects by itself
    // Closed for good (e.g. a 401): find out whether we are still logged in.
    try {
      await api('GET', '/api/v1/me');
      setTimeout(() => { if (S.es === es && S.me) connect(); }, 1000);
    } catch { /* api() went back to the login form on 401 */ }
  });
}

const inFlight = new Set();  // per running loadAll(): ids the event stream changed meanwhile

async function loadAll() {
  const liveMeanwhile = new Set();
  inFlight.add(liveMeanwhile);
  try {
    const [list, kpis] = await Promise.all([api('GET', '/api/v1/alerts?state=all'), api('GET', '/api/v1/kpis')]);
    const seen = new Set();
    for (const a of list.alerts || []) { upsert(a, false); seen.add(a.id); }
    // Gone from the list (forgotten by the desk), unless an event brought it after we asked.
    for (const id of [...S.alerts.keys()]) if (!seen.has(id) && !liveMeanwhile.has(id)) S.alerts.delete(id);
    S.kpis = kpis;
    renderKpis();
    renderSoon();
    refreshIncidentsSoon();
    if (S.view === 'audit') refreshAuditSoon();
  } catch (e) {
    if (e.status !== 401) console.warn('load failed', e);
  } finally {
    inFlight.delete(liveMeanwhile);
  }
}

// Takes an alert summary unless we already hold a newer one. `live`: from the event stream.
function upsert(a, live) {
  const old = S.alerts.get(a.id);
  if (old && old.updated_at && a.updated_at && new Date(old.updated_at) > new Date(a.updated_at)) return;
  S.alerts.set(a.id, a);
  if (live) for (const set of inFlight) set.add(a.id);
  if (live && !old && a.severity === 'critical' && isOpen(a)) {
    S.fresh.add(a.id);
    beep();
  }
  if (!isOpen(a) || a.state === 'acknowledged') S.fresh.delete(a.id);
  renderSoon();
}

const renderSoon = debounce(() => { renderList(); renderViews(); }, 30);
const refreshKpisSoon = debounce(async () => {
  try { S.kpis = await api('GET', '/api/v1/kpis'); renderKpis(); } catch { /* shown on the next refresh */ }
}, 300);
const refreshIncidentsSoon = debounce(async () => {
  try { S.incidents = (await api('GET', '/api/v1/incidents')).incidents || []; renderHeating(); } catch { /* keep the last */ }
}, 300);
const refreshAuditSoon = debounce(() => renderAudit(), 300);
const refreshDetailSoon = debounce(() => { if (S.detail) openDetail(S.detail.id); }, 100);

// ------------------------------------------------------------------ sound

function beep() {
  if (!S.sound) return;
  try {
    S.audio ||= new AudioContext();
    const ctx = S.audio;
    for (const at of [0, 0.25]) {
      const o = ctx.createOscillator();
      const g = ctx.createGain();
      o.frequency.value = 880;
      g.gain.setValueAtTime(0.2, ctx.currentTime + at);
      g.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + at + 0.2);
      o.connect(g).connect(ctx.destination);
      o.start(ctx.currentTime + at);
      o.stop(ctx.currentTime + at + 0.2);
    }
    document.body.dataset.beeps = String(Number(document.body.dataset.beeps || 0) + 1);
  } catch (e) { console.warn('sound', e); }
}

// ------------------------------------------------------------------ KPIs

function renderKpis() {
  const k = S.kpis || {};
  const show = (id, v) => { $(`[data-testid=${id}]`).textContent = v ?? '–'; };
  show('kpi-fraud', k.fraud_warnings_today);
  show('kpi-reach', k.reach_rate === null || k.reach_rate === undefined ? '–' : `${(k.reach_rate * 100).toFixed(1)}%`);
  // Must-reach alerts only (stop_when: reached); operator notices are not in it.
  $('[data-testid=kpi-reach]').parentElement.title = k.must_reach_today ? `${k.reached_today} / ${k.must_reach_today}` : '';
  show('kpi-outages', k.open_outages);
  show('kpi-sla', k.sla_breaches_today);
  $('[data-testid=kpi-outages]').parentElement.classList.toggle('alarm', (k.open_outages || 0) > 0);
  $('[data-testid=kpi-sla]').parentElement.classList.toggle('alarm', (k.sla_breaches_today || 0) > 0);
}

// ------------------------------------------------------------------ alert list

const FILTERS = ['type', 'severity', 'state', 'district', 'street', 'grid', 'rule'];
const filterValue = (name) => $(`#f-${name}`).value;

// Fills a <select> with "all" + values, keeping the current choice.
function fillSelect(sel, values, label, first = [['', `${t(`filter.${sel.id.slice(2)}`)}: ${t('filter.any')}`]]) {
  const options = [...first, ...values.map((v) => [v, label(v)])];
  const sig = JSON.stringify(options);
  if (sel.dataset.sig === sig) return;
  const keep = sel.value;
  sel.replaceChildren(...options.map(([v, l]) => el('option', { value: v }, l)));
  sel.dataset.sig = sig;
  sel.value = options.some(([v]) => v === keep) ? keep : options[0][0];
}

function renderFilters(all) {
  const uniq = (f) => [...new Set(all.map(f).filter(Boolean))].sort();
  const prefix = (k) => `${t(`filter.${k}`)}: `;
  fillSelect($('#f-type'), uniq((a) => a.type), (v) => prefix('type') + v);
  fillSelect($('#f-severity'), SEVERITIES, (v) => prefix('severity') + t(`sev.${v}`));
  fillSelect($('#f-state'), STATES, (v) => prefix('state') + t(`state.${v}`),
    [['open', `${prefix('state')}${t('filter.open')}`], ['', `${prefix('state')}${t('filter.any')}`]]);
  fillSelect($('#f-district'), uniq((a) => a.location?.district), (v) => prefix('district') + v);
  const d = filterValue('district');
  fillSelect($('#f-street'), uniq((a) => (!d || a.location?.district === d) && a.location?.street), (v) => prefix('street') + v);
  fillSelect($('#f-grid'), uniq((a) => a.location?.grid), (v) => prefix('grid') + v);
  fillSelect($('#f-rule'), uniq((a) => a.rule), (v) => prefix('rule') + v);
}

function matches(a, f) {
  if (f.type && a.type !== f.type) return false;
  if (f.severity && a.severity !== f.severity) return false;
  if (f.state === 'open' ? !isOpen(a) : f.state && a.state !== f.state) return false;
  for (const k of ['district', 'street', 'grid']) if (f[k] && a.location?.[k] !== f[k]) return false;
  if (f.rule && a.rule !== f.rule) return false;
  if (f.search) {
    const hay = [a.id, a.type, a.title, a.summary, a.rule, a.assignee, a.state, t(`state.${a.state}`),
      ...Object.entries(a.labels || {}).flat(), ...Object.values(a.location || {})].join(' ').toLowerCase();
    if (!f.search.toLowerCase().split(/\s+/).filter(Boolean).every((w) => hay.includes(w))) return false;
  }
  return true;
}

const MAX_ROWS = 500;      // rows drawn; narrow the filters for the rest
const MAX_HELD = 3000;     // alerts kept in the page; the oldest closed ones go first

function renderList() {
  if (!S.me) return;
  if (S.alerts.size > MAX_HELD) {
    const closed = [...S.alerts.values()].filter((a) => !isOpen(a)).sort((a, b) => new Date(a.updated_at) - new Date(b.updated_at));
    for (const a of closed.slice(0, S.alerts.size - MAX_HELD)) S.alerts.delete(a.id);
  }
  const all = [...S.alerts.values()].sort((a, b) => new Date(b.raised_at) - new Date(a.raised_at) || (a.id < b.id ? 1 : -1));
  renderFilters(all);
  const f = Object.fromEntries(FILTERS.map((k) => [k, filterValue(k)]));
  f.search = $('#f-search').value.trim();
  // Counts per state over everything the other filters let through.
  const counts = {};
  for (const a of all) if (matches(a, { ...f, state: '' })) counts[a.state] = (counts[a.state] || 0) + 1;
  $('#state-counts').replaceChildren(...STATES.filter((s) => counts[s]).map((s) =>
    el('button', { type: 'button', class: `count state-${s}${f.state === s ? ' active' : ''}`, testid: `count-${s}`,
      onclick: () => { $('#f-state').value = f.state === s ? 'open' : s; renderList(); } },
    `${t(`state.${s}`)} `, el('b', {}, counts[s]))));
  const shown = all.filter((a) => matches(a, f));
  const rows = shown.slice(0, MAX_ROWS).map((a) => el('tr', {
    class: `sev-${a.severity}${S.fresh.has(a.id) ? ' new-critical' : ''}${S.detail?.id === a.id ? ' selected' : ''}`,
    testid: 'alert-row', 'data-id': a.id, 'data-state': a.state, 'data-severity': a.severity, 'data-type': a.type,
    'data-assignee': a.assignee || '',
    onclick: () => openDetail(a.id),
  },
  el('td', { class: 'time', title: fmtTime(a.raised_at) }, fmtShort(a.raised_at)),
  el('td', {}, sevBadge(a.severity)),
  el('td', {}, stateBadge(a.state)),
  el('td', { class: 'mono col-type' }, a.type),
  el('td', { testid: 'alert-title' }, a.title, a.summary ? el('div', { class: 'muted small' }, a.summary) : null),
  el('td', { class: 'mono small col-loc' }, locationText(a.location)),
  el('td', { class: 'col-assignee' }, a.assignee || '')));
  $('#alert-rows').replaceChildren(...rows);
  $('#list-empty').hidden = rows.length > 0;
  $('#list-more').hidden = shown.length <= MAX_ROWS;
  $('#list-more').textContent = `${t('list.more')} ${MAX_ROWS} / ${shown.length}`;
}

// ------------------------------------------------------------------ detail

async function openDetail(id) {
  S.fresh.delete(id);
  let d;
  try {
    d = await api('GET', `/api/v1/alerts/${encodeURIComponent(id)}`);
  } catch (e) {
    if (e.status === 404) closeDetail();
    return;
  }
  const scroll = $('#detail').scrollTop;
  S.detail = d;
  renderDetail();
  $('#detail').scrollTop = scroll;
  renderList();
}

function closeDetail() {
  S.detail = null;
  $('#detail').hidden = true;
  $('#detail').replaceChildren();
  document.body.classList.remove('detail-open');
  renderList();
}

const kv = (label, value, testid, wide) => (value === undefined || value === null || value === '' ? null
  : el('div', { class: wide ? 'kv wide' : 'kv' }, el('span', { class: 'k' }, label), el('span', { class: 'v', testid }, value)));

function renderEvidence(r) {
  if (!r) return null;
  const ev = r.evidence || {};
  const w = r.window || {};
  const parts = [el('h3', {}, t('detail.evidence'))];
  parts.push(el('div', { class: 'grid' },
    kv(t('detail.key'), Object.entries(r.key || {}).map(([k, v]) => `${k}=${v}`).join(', '), 'evidence-key'),
    kv(t('detail.window'), w.start ? `${fmtTime(w.start)} → ${fmtTime(w.end)} (${fmtNum((w.size_ms || 0) / 1000)} s)` : null, 'evidence-window', true),
    kv(t('detail.count'), ev.count, 'evidence-count'),
    kv(t('detail.distinct'), ev.distinct),
    kv(t('detail.first'), ev.first_event_id ? `${ev.first_event_id} @ ${fmtTime(ev.first_event_time)}` : null, null, true),
    kv(t('detail.last'), ev.last_event_id ? `${ev.last_event_id} @ ${fmtTime(ev.last_event_time)}` : null, null, true),
    kv(t('detail.deadline'), ev.deadline),
    kv(t('detail.labels'), Object.entries(r.labels || {}).map(([k, v]) => `${k}=${v}`).join(', '))));
  const aggs = Object.entries(ev.aggregates || {});
  if (aggs.length) {
    parts.push(el('h4', {}, t('detail.aggregates')), el('table', { class: 'small', testid: 'aggregates' },
      el('tbody', {}, aggs.map(([k, v]) => el('tr', { testid: 'aggregate' }, el('td', { class: 'mono' }, k), el('td', { class: 'num' }, fmtNum(v)))))));
  }
  if (r.score) {
    const s = r.score;
    parts.push(el('h4', {}, `${t('detail.score')}: `, el('b', { testid: 'score-value' }, fmtNum(s.value)), ` (${s.level})`,
      ...(s.labels || []).map((l) => el('span', { class: 'tag', testid: 'score-label' }, l))));
    const max = Math.max(1, ...(s.features || []).map((f) => Math.abs(f.contribution)));
    parts.push(el('table', { class: 'small features', testid: 'score-features' },
      el('thead', {}, el('tr', {}, ['detail.feature', 'detail.value', 'detail.weight', 'detail.contribution'].map((k) => el('th', {}, t(k))))),
      el('tbody', {}, (s.features || []).map((f) => el('tr', { testid: 'score-feature', class: f.contribution ? '' : 'muted' },
        el('td', { class: 'mono' }, f.name), el('td', { class: 'num' }, fmtNum(f.value)), el('td', { class: 'num' }, fmtNum(f.weight)),
        el('td', { class: 'num' }, fmtNum(f.contribution),
          el('span', { class: 'bar', style: `width:${Math.round(60 * Math.abs(f.contribution) / max)}px` })))))));
  }
  return el('section', { testid: 'evidence' }, parts);
}

function renderTimeline(d) {
  const ns = Array.isArray(d.notifications) ? d.notifications : [];
  return el('section', { testid: 'delivery' }, el('h3', {}, t('detail.delivery')),
    ns.length ? ns.map((n) => el('div', { class: `notification ntf-${n.state}`, testid: 'notification', 'data-state': n.state, 'data-channel': n.channel },
      el('div', { class: 'ntf-head' },
        el('b', { testid: 'notification-recipient' }, n.recipient || ''), ' · ', el('span', { class: 'mono' }, n.channel), ' · ',
        el('span', { class: 'mono', testid: 'notification-address' }, n.address || ''),
        el('span', { class: `ntf-state ntf-${n.state}`, testid: 'notification-state' }, t(`ntf.${n.state}`, n.state)),
        el('span', { class: 'muted small' }, ` ${t('detail.step')} ${(n.step ?? 0) + 1}${n.round ? ` · round ${n.round + 1}` : ''} · ${n.attempts ?? 0} ${t('detail.attempts')}`)),
      n.text ? el('div', { class: 'muted small ntf-text' }, n.text) : null,
      el('ol', { class: 'timeline' }, (n.timeline || []).map((e) => el('li', { testid: 'timeline-entry', 'data-action': e.action },
        el('span', { class: 'time' }, fmtTime(e.at)), ' ', el('b', {}, e.action), ' ', el('span', { class: 'muted' }, e.by || ''),
        e.detail ? el('span', { class: 'small' }, ` — ${e.detail}`) : null)))))
      : el('p', { class: 'muted' }, t('detail.no_notifications')));
}

function renderActions(d) {
  if (!S.me || S.me.role === 'viewer') return null;
  const closed = CLOSED.has(d.state);
  const act = (action, body) => async () => {
    const msg = $('#action-msg');
    try {
      await api('POST', `/api/v1/alerts/${d.id}/${action}`, body ? body() : {});
      msg.textContent = t('act.done');
      msg.className = 'ok';
      openDetail(d.id);
    } catch (e) {
      msg.textContent = e.status === 403 ? t('error.forbidden') : e.status === 409 ? t('error.conflict') : e.message;
      msg.className = 'error';
    }
  };
  const assignee = el('input', { testid: 'assignee-input', placeholder: t('act.assignee'), value: d.assignee || '' });
  const note = el('input', { testid: 'note-input', placeholder: t('act.note_ph') });
  return el('section', { class: 'actions', testid: 'actions' },
    el('button', { type: 'button', testid: 'act-ack', disabled: closed || d.state === 'acknowledged', onclick: act('ack') }, t('act.ack')),
    el('button', { type: 'button', testid: 'act-resolve', disabled: closed, onclick: act('resolve') }, t('act.resolve')),
    el('button', { type: 'button', testid: 'act-escalate', disabled: closed, onclick: act('escalate') }, t('act.escalate')),
    el('button', { type: 'button', testid: 'act-silence', onclick: () => openSilence(d) }, t('act.silence')),
    el('div', { class: 'row' }, assignee, el('button', { type: 'button', testid: 'act-assign', onclick: act('assign', () => ({ assignee: assignee.value.trim() })) }, t('act.assign'))),
    el('div', { class: 'row' }, note, el('button', { type: 'button', testid: 'act-note', onclick: act('note', () => ({ note: note.value.trim() })) }, t('act.note'))),
    el('p', { id: 'action-msg', testid: 'action-msg' }));
}

function renderDetail() {
  const d = S.detail;
  const box = $('#detail');
  if (!d) { box.hidden = true; return; }
  const linked = (d.linked || []).filter((x) => x.id !== d.id);
  box.dataset.id = d.id;
  box.dataset.state = d.state;
  box.replaceChildren(...[
    el('button', { type: 'button', class: 'close', testid: 'detail-close', onclick: closeDetail, title: t('detail.close') }, '×'),
    el('div', { class: 'detail-head' }, sevBadge(d.severity), ' ', stateBadge(d.state), ' ', el('span', { class: 'mono small' }, `${d.type} · ${d.id}`)),
    el('h2', { testid: 'detail-title' }, d.title),
    d.summary ? el('p', {}, d.summary) : null,
    el('div', { class: 'grid' },
      kv(t('detail.rule'), d.rule, 'detail-rule'),
      kv(t('detail.version'), d.rule_set_version, 'detail-version'),
      kv(t('detail.raised'), fmtTime(d.raised_at), 'detail-raised'),
      kv(t('detail.updated'), fmtTime(d.updated_at)),
      kv(t('detail.reached'), fmtTime(d.reached_at), 'detail-reached'),
      kv(t('detail.policy'), d.policy ? `${d.policy} · ${t('detail.step')} ${(d.escalation_step ?? 0) + 1}` : null),
      kv(t('detail.incident'), d.incident),
      kv(t('col.assignee'), d.assignee, 'detail-assignee'),
      kv(t('col.location'), locationText(d.location))),
    renderActions(d),
    renderEvidence(d.raised),
    linked.length ? el('section', { testid: 'linked' }, el('h3', {}, t('detail.linked')),
      el('ul', {}, linked.map((x) => el('li', { testid: 'linked-alert', class: 'link', onclick: () => openDetail(x.id) },
        sevBadge(x.severity), ' ', stateBadge(x.state), ' ', x.title)))) : null,
    renderTimeline(d),
    el('section', { testid: 'audit-trail' }, el('h3', {}, t('detail.audit')),
      el('ol', { class: 'timeline' }, (d.audit || []).map((e) => el('li', { testid: 'audit-entry', 'data-action': e.action },
        el('span', { class: 'time' }, fmtTime(e.at)), ' ', el('b', {}, e.action), ' ', el('span', { class: 'muted' }, e.by),
        e.detail ? el('span', { class: 'small' }, ` — ${e.detail}`) : null))))].filter(Boolean));
  box.hidden = false;
  document.body.classList.add('detail-open');
}

function openSilence(d) {
  const dlg = $('#silence-dialog');
  const form = $('#silence-form');
  const m = [`type=${d.type}`];
  if (d.rule) m.push(`rule=${d.rule}`);
  // Key values the server masked (131****0001) would never match: leave those out.
  for (const [k, v] of Object.entries(d.raised?.key || {})) if (!String(v).includes('*')) m.push(`key.${k}=${v}`);
  form.matchers.value = m.join('\n');
  form.comment.value = `${d.id}`;
  $('#silence-error').hidden = true;
  dlg.showModal();
}

async function createSilence(ev) {
  ev.preventDefault();
  const form = $('#silence-form');
  try {
    await api('POST', '/api/v1/silences', {
      matchers: form.matchers.value.split('\n').map((s) => s.trim()).filter(Boolean),
      duration: form.duration.value.trim(), comment: form.comment.value.trim(),
    });
    $('#silence-dialog').close();
    if (S.detail) openDetail(S.detail.id);
  } catch (e) {
    $('#silence-error').textContent = e.message;
    $('#silence-error').hidden = false;
  }
}

// ------------------------------------------------------------------ SLA board

// Running clocks from the engines (GET /api/v1/sla/clocks), polled while the board is shown.
let clockPoll = null;
async function refreshClocks() {
  try { S.clocks = await api('GET', '/api/v1/sla/clocks?limit=200'); } catch { return; }
  if (S.view === 'sla') renderSla();
  // The engines publish on demand: the first answer may predate the request.
  if (!S.clocks.published_at && S.view === 'sla') setTimeout(refreshClocks, 1000);
}
function pollClocks(on) {
  clearInterval(clockPoll);
  clockPoll = on ? setInterval(refreshClocks, 5000) : null;
  if (on) refreshClocks();
}
function fmtLeft(iso) {
  const s = Math.floor((new Date(iso) - Date.now()) / 1000);
  if (s <= 0) return t('sla.due_now');
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad(s % 60)}s`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h ${pad(m % 60)}m` : `${Math.floor(h / 24)}d ${h % 24}h`;
}

function renderClocks() {
  const clocks = S.clocks?.clocks || [];
  return [
    el('h3', {}, t('sla.clocks'), ' ', el('span', { class: 'muted' }, clocks.length)),
    clocks.length ? el('table', { class: 'small clocks', testid: 'sla-clocks' },
      el('thead', {}, el('tr', {}, ...['sla.col.left', 'sla.col.ticket', 'sla.col.deadline', 'sla.col.due', 'sla.col.title'].map((k) => el('th', {}, t(k))))),
      el('tbody', {}, clocks.map((c) => {
        const soon = new Date(c.due_at) - Date.now() < 15 * 60 * 1000;
        return el('tr', { testid: 'sla-clock', 'data-key': Object.values(c.key).join('/'), 'data-deadline': c.deadline, class: soon ? 'soon' : '' },
          el('td', { class: 'num', testid: 'sla-left' }, fmtLeft(c.due_at)),
          el('td', { class: 'mono' }, Object.values(c.key).join(' / ')),
          el('td', {}, sevBadge(c.severity), ' ', c.labels?.level ? t(`sla.level.${c.labels.level}`) : c.deadline),
          el('td', { class: 'time' }, fmtTime(c.due_at)),
          el('td', {}, c.title));
      })))
      : el('p', { class: 'muted', testid: 'sla-clocks-empty' }, t('sla.empty')),
  ];
}

function renderSla() {
  const box = $('#view-sla');
  const hotline = [...S.alerts.values()].filter((a) => a.type?.startsWith('hotline.'));
  const open = hotline.filter(isOpen);
  const rank = (s) => SEVERITIES.indexOf(s);
  const dayStart = S.kpis?.day_start ? new Date(S.kpis.day_start) : new Date(new Date().setHours(0, 0, 0, 0));
  const today = hotline.filter((a) => new Date(a.raised_at) >= dayStart);
  const byLevel = (list, lv) => list.filter((a) => levelOf(a) === lv);
  box.replaceChildren(
    ...renderClocks(),
    el('h3', {}, t('sla.open')),
    el('div', { class: 'sla' }, LEVELS.map((lv) => {
      const items = byLevel(open, lv).sort((a, b) => rank(a.severity) - rank(b.severity) || new Date(a.raised_at) - new Date(b.raised_at));
      return el('div', { class: 'sla-col', testid: `sla-level-${lv}` },
        el('h4', {}, t(`sla.level.${lv}`), ' ', el('span', { class: 'muted' }, items.length)),
        items.length ? items.map((a) => el('div', { class: `card sev-${a.severity}`, testid: 'sla-item', 'data-id': a.id, onclick: () => openDetail(a.id) },
          el('div', {}, sevBadge(a.severity), ' ', stateBadge(a.state), ' ', el('span', { class: 'age', testid: 'sla-age' }, `${t('sla.since')} ${fmtAge(a.raised_at)}`)),
          el('div', { class: 'small' }, a.title),
          el('div', { class: 'muted small' }, [a.type, a.assignee, locationText(a.location)].filter(Boolean).join(' · '))))
          : el('p', { class: 'muted' }, t('sla.empty')));
    })),
    el('h3', {}, t('sla.breached')),
    el('table', { class: 'small breached', testid: 'sla-breached' }, el('tbody', {},
      LEVELS.map((lv) => {
        const l = byLevel(today, lv);
        return el('tr', { 'data-level': lv }, el('td', {}, t(`sla.level.${lv}`)), el('td', { class: 'num', testid: `sla-breached-${lv}` }, l.length),
          el('td', {}, SEVERITIES.map((s) => l.filter((a) => a.severity === s).length ? el('span', { class: `sev sev-${s}` }, `${t(`sev.${s}`)} ${l.filter((a) => a.severity === s).length}`) : null)));
      }))));
}

// ------------------------------------------------------------------ heating view

let mapLoaded = null;
function loadMap() {
  mapLoaded ||= fetch('map.svg').then((r) => r.text()).then((svg) => {
    // Our own bundled file; parsed as SVG rather than assigned as HTML.
    const doc = new DOMParser().parseFromString(svg, 'image/svg+xml');
    $('#map').replaceChildren(document.importNode(doc.documentElement, true));
  });
  return mapLoaded;
}

function renderHeating() {
  if (!S.me) return;
  const open = [...S.alerts.values()].filter((a) => a.type?.startsWith('heating.') && a.type !== 'heating.restored' && isOpen(a));
  const count = (k) => { const c = {}; for (const a of open) { const v = a.location?.[k]; if (v) c[v] = (c[v] || 0) + 1; } return c; };
  const districts = count('district');
  const streets = count('street');
  loadMap().then(() => {
    for (const g of document.querySelectorAll('#map [id^="district-"], #map [id^="street-"]')) {
      const [kind, ...rest] = g.id.split('-');
      const n = (kind === 'district' ? districts : streets)[rest.join('-')] || 0;
      g.dataset.count = n;
      g.classList.toggle('heat-1', n === 1);
      g.classList.toggle('heat-2', n >= 2 && n < 4);
      g.classList.toggle('heat-3', n >= 4);
      const title = g.querySelector('title') || g.appendChild(document.createElementNS('http://www.w3.org/2000/svg', 'title'));
      title.textContent = `${rest.join('-')}: ${n}`;
    }
  });
  const outages = open.filter((a) => OUTAGE_TYPES.has(a.type)).sort((a, b) => new Date(a.raised_at) - new Date(b.raised_at));
  const incidents = S.incidents.filter((i) => !i.closed_at);
  const ids = (i) => (i.alerts || []).map((x) => (typeof x === 'string' ? x : x.id));
  const group = (g) => (!g ? '' : typeof g === 'string' ? g : Array.isArray(g) ? g.map((p) => (Array.isArray(p) ? p.join('=') : p)).join(', ')
    : Object.entries(g).map(([k, v]) => `${k}=${v}`).join(', '));
  const hh = (list) => list.reduce((s, a) => s + (households(a) || 0), 0);
  $('#heating-lists').replaceChildren(
    el('h3', {}, t('heating.outages'), ' ', el('span', { class: 'muted' }, outages.length)),
    outages.length ? el('table', { class: 'small', testid: 'outage-list' }, el('tbody', {}, outages.map((a) => {
      const n = households(a);
      return el('tr', { testid: 'outage', 'data-id': a.id, class: `link sev-${a.severity}`, onclick: () => openDetail(a.id) },
        el('td', {}, sevBadge(a.severity)), el('td', {}, a.title),
        el('td', { class: 'mono' }, locationText(a.location)),
        el('td', { class: 'num', testid: 'outage-households' }, n === null ? '' : `${n} ${t('heating.households')}`),
        el('td', { class: 'age' }, `${t('heating.since')} ${fmtAge(a.raised_at)}`));
    }))) : el('p', { class: 'muted' }, t('heating.empty')),
    el('h3', {}, t('heating.incidents'), ' ', el('span', { class: 'muted' }, incidents.length)),
    el('table', { class: 'small', testid: 'incident-list' }, el('tbody', {}, incidents.map((i) => {
      const members = ids(i).map((id) => S.alerts.get(id)).filter(Boolean);
      const n = hh(members);
      return el('tr', { testid: 'incident', 'data-id': i.id, class: 'link', onclick: () => members[0] && openDetail(members[0].id) },
        el('td', {}, i.title || group(i.group) || i.id), el('td', { class: 'mono' }, group(i.group)),
        el('td', { class: 'num' }, `${ids(i).length} ${t('tab.alerts')}`),
        el('td', { class: 'num' }, n ? `${n} ${t('heating.households')}` : ''),
        // Related incidents (incident rules' link): e.g. the fault behind a suspected outage.
        el('td', { testid: 'incident-linked' }, (i.linked || []).map((l) => {
          const other = S.incidents.find((x) => x.id === l);
          return el('span', { class: 'tag' }, `${t('heating.linked')} ${other ? (other.title || group(other.group)) : l}`);
        })),
        el('td', { class: 'age' }, `${t('heating.since')} ${fmtAge(i.opened_at)}`));
    }))));
}

// ------------------------------------------------------------------ audit log (admin)

let auditEntries = [];
async function renderAudit() {
  if (S.me?.role !== 'admin') return;
  try { auditEntries = (await api('GET', '/api/v1/audit?limit=1000')).entries || []; } catch { return; }
  renderAuditRows();
}

// People's actions only (operators, SMS replies) or everything, and a text filter.
function renderAuditRows() {
  const people = $('#audit-people').checked;
  const words = $('#audit-search').value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  const shown = auditEntries.filter((e) => (!people || /^(operator|sms):/.test(e.by))
    && words.every((w) => [e.alert, e.type, e.action, e.by, e.detail].join(' ').toLowerCase().includes(w)));
  $('#audit-rows').replaceChildren(...shown.map((e) => el('tr', { testid: 'audit-row', 'data-action': e.action, 'data-alert': e.alert,
    class: e.alert ? 'link' : '', onclick: () => e.alert && openDetail(e.alert) },
  el('td', { class: 'time' }, fmtTime(e.at)), el('td', { class: 'mono' }, e.alert ? `${e.type || ''} ${e.alert}` : ''),
  el('td', {}, e.action), el('td', {}, e.by), el('td', { class: 'small' }, e.detail || ''))));
}

// ------------------------------------------------------------------ views and wiring

function renderViews() {
  if (S.view === 'sla') renderSla();
  if (S.view === 'heating') renderHeating();
}

function showView(v) {
  S.view = v;
  for (const b of document.querySelectorAll('nav button')) b.classList.toggle('active', b.dataset.view === v);
  for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== `view-${v}`;
  if (v === 'audit') renderAudit();
  if (v === 'heating') refreshIncidentsSoon();
  pollClocks(v === 'sla');
  renderViews();
}

function wireStatic() {
  $('#login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const err = $('[data-testid=login-error]');
    err.hidden = true;
    try {
      const me = await api('POST', '/api/v1/login', { user: f.user.value.trim(), password: f.password.value });
      f.password.value = '';
      enter(me);
    } catch (e) {
      // 401: wrong user or password; 429: too many failures, the server says for how long.
      err.textContent = e.status === 429 ? e.message : t('login.failed');
      err.hidden = false;
      f.password.select();
    }
  });
  $('#logout').addEventListener('click', async () => {
    try { await api('POST', '/api/v1/logout', {}); } catch { /* gone anyway */ }
    leave();
  });
  $('#lang').addEventListener('click', () => {
    setLang(lang() === 'zh' ? 'en' : 'zh');
    applyI18n();
    for (const s of document.querySelectorAll('select')) delete s.dataset.sig;
    renderChrome();
    if (S.me) { setLive(S.es?.readyState === EventSource.OPEN); renderKpis(); renderList(); renderViews(); renderDetail(); if (S.view === 'audit') renderAudit(); }
  });
  $('#sound').addEventListener('click', () => {
    S.sound = !S.sound;
    localStorage.setItem('tocsin.sound', S.sound ? 'on' : 'off');
    if (S.sound) { S.audio ||= new AudioContext(); S.audio.resume(); }
    renderChrome();
  });
  for (const b of document.querySelectorAll('nav button')) b.addEventListener('click', () => showView(b.dataset.view));
  for (const k of FILTERS) $(`#f-${k}`).addEventListener('change', renderList);
  $('#f-search').addEventListener('input', renderList);
  $('#silence-form').addEventListener('submit', createSilence);
  $('#audit-people').addEventListener('change', renderAuditRows);
  $('#audit-search').addEventListener('input', renderAuditRows);
  $('#silence-cancel').addEventListener('click', () => $('#silence-dialog').close());
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && S.detail && !$('#silence-dialog').open) closeDetail(); });
  // Ages ("for 3h 12m") move on by themselves.
  setInterval(() => { if (S.me && S.view !== 'alerts' && S.view !== 'audit') renderViews(); }, 30000);
}

start();
