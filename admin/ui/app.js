// Hourglass dashboard: plain JavaScript, no build step. It talks to the JSON
// API beside it (relative URLs, so the handler can be mounted under any
// prefix) and renders every value with textContent, never as HTML.
'use strict';
(() => {
  const TOKEN_KEY = 'hourglass-token';
  const $ = (id) => document.getElementById(id);

  let info = null;   // GET api/v1/info, per token
  let viewGen = 0;   // bumps on every route change; stale async work checks it
  let current = null; // the message on the message page: {id, state, bytes}
  let flash = '';    // a confirmation shown on the next render of the message page
  let listNext = ''; // cursor of the message list's next page
  let listQuery = ''; // the list's query without cursor

  class ApiError extends Error {
    constructor(status, body) {
      super(body && body.error ? body.error : 'HTTP ' + status);
      this.status = status;
      this.body = body;
    }
  }

  async function api(method, path, body) {
    const headers = { 'Accept': 'application/json' };
    const tok = sessionStorage.getItem(TOKEN_KEY);
    if (tok) headers['Authorization'] = 'Bearer ' + tok;
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const r = await fetch('api/v1/' + path, init);
    let data = null;
    try { data = await r.json(); } catch (e) { /* no JSON body */ }
    if (r.status === 401) {
      showLogin(data && data.error);
      throw new ApiError(401, data);
    }
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }

  // ---- formatting ----
  function fmtNum(n) { return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US'); }
  function fmtRate(r) { return r.toFixed(r < 10 ? 2 : 0) + '/s'; }
  function fmtBytes(n) {
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  }
  function fmtDur(s) {
    if (!s) return '0';
    if (s < 1e-3) return (s * 1e6).toFixed(0) + ' µs';
    if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 0) + ' ms';
    if (s < 120) return s.toFixed(2) + ' s';
    return (s / 60).toFixed(1) + ' min';
  }
  function fmtRel(ms) {
    const a = Math.abs(ms) / 1000;
    let t;
    if (a < 60) t = a.toFixed(0) + 's';
    else if (a < 3600) t = (a / 60).toFixed(0) + 'm';
    else if (a < 172800) t = (a / 3600).toFixed(1) + 'h';
    else t = (a / 86400).toFixed(1) + 'd';
    return ms >= 0 ? 'in ' + t : t + ' ago';
  }
  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    return d.toLocaleString() + ' (' + fmtRel(d.getTime() - Date.now()) + ')';
  }
  // datetime-local input value (local time) to RFC 3339 UTC, or ''.
  function localToISO(v) { return v ? new Date(v).toISOString() : ''; }
  function isoToLocal(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    const p = (n) => String(n).padStart(2, '0');
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }

  function setText(id, v) { $(id).textContent = v; }
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  let toastTimer = 0;
  function toast(msg, ok) {
    const t = $('toast');
    t.textContent = msg;
    t.className = ok ? 'ok' : 'error';
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 8000);
  }
  function errText(e) {
    let s = e.message;
    if (e.body && e.body.allowed) s += ' — allowed: ' + e.body.allowed.join(', ');
    return s;
  }
  // adminShow shows an action element only when writes are allowed.
  function adminShow(e, visible) { e.hidden = !visible || !info || info.read_only; }

  // ---- views ----
  const views = ['login', 'overview', 'messages', 'message'];
  function show(name) {
    for (const v of views) $('view-' + v).hidden = v !== name;
  }

  function showLogin(msg) {
    viewGen++;
    info = null;
    show('login');
    $('login-error').hidden = !msg;
    $('login-error').textContent = msg || '';
    $('login-token').focus();
  }

  async function loadInfo() {
    info = await api('GET', 'info');
    $('ro-badge').hidden = !info.read_only;
    setText('mode-badge', info.mode + ' · ' + info.shards + ' shards');
    $('forget-token').hidden = !sessionStorage.getItem(TOKEN_KEY);
  }

  // ---- overview ----
  function hist(container, h) {
    container.replaceChildren();
    const max = Math.max(1, ...h.counts);
    const start = Date.parse(h.start);
    h.counts.forEach((n, i) => {
      const bar = el('div', undefined, 'bar');
      const fill = el('div', undefined, 'fill');
      fill.style.height = (100 * n / max) + '%';
      const at = new Date(start + i * h.bucket_seconds * 1000);
      bar.title = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) + ': ' + n;
      bar.appendChild(fill);
      container.appendChild(bar);
    });
  }

  function renderSummary(s) {
    $('ov-error').textContent = s.error ? 'Last count failed: ' + s.error : '';
    setText('ov-refresh', String(s.refresh_seconds));
    if (!s.as_of) {
      setText('ov-asof', 'counting…');
      return;
    }
    setText('ov-asof', new Date(s.as_of).toLocaleTimeString());
    setText('pending-total', fmtNum(s.pending));
    setText('pending-later', fmtNum(s.later));
    setText('dead-total', fmtNum(s.dead));
    hist($('hist-hour'), s.next_hour);
    hist($('hist-day'), s.next_day);
    const tb = $('by-dest').tBodies[0];
    tb.replaceChildren();
    for (const d of s.by_dest) {
      const tr = el('tr');
      const td = el('td');
      const a = el('a', d.dest);
      a.href = '#/messages?dest=' + encodeURIComponent(d.dest);
      td.appendChild(a);
      tr.append(td, el('td', fmtNum(d.count), 'num'));
      tb.appendChild(tr);
    }
    if (s.by_dest.length === 0) {
      const tr = el('tr');
      const td = el('td', 'nothing pending', 'muted');
      td.colSpan = 2;
      tr.appendChild(td);
      tb.appendChild(tr);
    }
    $('by-dest-other').hidden = !s.other_dests;
    setText('by-dest-other', s.other_dests + ' more destinations hold ' + fmtNum(s.other_count) + ' messages.');
  }

  function renderStats(st) {
    setText('in-flight', fmtNum(st.in_flight));
    setText('shards', String(st.shards));
    setText('store-size', st.store ? fmtBytes(st.store.disk_bytes) : 'in memory');
    const r = st.rates;
    setText('rate-window', r ? '(over the last ' + r.window_seconds.toFixed(0) + ' s)' : '(waiting for a second sample)');
    const rates = { 'rate-scheduled': 'scheduled', 'rate-fired': 'fired', 'rate-delivered': 'delivered',
      'rate-retried': 'retried', 'rate-dead': 'dead_lettered', 'rate-expired': 'expired' };
    for (const [id, k] of Object.entries(rates)) setText(id, r ? fmtRate(r[k]) : '—');
    const l = st.lateness;
    setText('lat-p50', fmtDur(l.p50_seconds));
    setText('lat-p90', fmtDur(l.p90_seconds));
    setText('lat-p99', fmtDur(l.p99_seconds));
    setText('lat-max', fmtDur(l.max_seconds));
    setText('lat-count', fmtNum(l.count));
    setText('st-mode', st.mode === 'pebble' ? 'durable (Pebble, synced)' : 'memory: nothing survives a restart');
    setText('st-disk', st.store ? fmtBytes(st.store.disk_bytes) : '—');
    setText('st-sync', st.store ? fmtDur(st.store.sync.p50_seconds) + ' / ' + fmtDur(st.store.sync.p99_seconds) : '—');
    const rec = st.recovery;
    setText('recovery', rec.ready ? 'done' + (st.mode === 'pebble' ? ' (store opened in ' + fmtDur(rec.store_seconds) + ')' : '') : 'loading the first window…');
    setText('rec-pending', fmtNum(rec.pending_at_open));
    setText('rec-times', (rec.first_fire_seconds ? fmtDur(rec.first_fire_seconds) : '—') + ' / ' + (rec.full_load_seconds ? fmtDur(rec.full_load_seconds) : '—'));
  }

  function overview() {
    show('overview');
    const gen = viewGen;
    const tick = async () => {
      if (gen !== viewGen) return;
      try {
        const [s, st] = await Promise.all([api('GET', 'summary'), api('GET', 'stats')]);
        if (gen !== viewGen) return;
        renderSummary(s);
        renderStats(st);
        const wait = !s.as_of || s.refreshing ? 500 : Math.max(1000, s.refresh_seconds * 1000);
        setTimeout(tick, wait);
      } catch (e) {
        if (e.status === 401 || gen !== viewGen) return;
        toast(errText(e));
        setTimeout(tick, 5000);
      }
    };
    tick();
  }

  // ---- message browser ----
  function renderRows(msgs, append) {
    const tb = $('results').tBodies[0];
    if (!append) tb.replaceChildren();
    for (const m of msgs) {
      const tr = el('tr');
      const td = el('td');
      const a = el('a', m.id);
      a.href = '#/message/' + m.id;
      td.appendChild(a);
      tr.append(td, el('td', m.state), el('td', m.dest), el('td', fmtTime(m.due)),
        el('td', String(m.attempts), 'num'), el('td', fmtNum(m.payload_size), 'num'));
      tb.appendChild(tr);
    }
    $('results-empty').hidden = tb.rows.length > 0;
  }

  async function fetchList(append) {
    const gen = viewGen;
    $('search-error').hidden = true;
    try {
      const q = listQuery + (append && listNext ? '&cursor=' + encodeURIComponent(listNext) : '');
      const res = await api('GET', 'messages?' + q);
      if (gen !== viewGen) return;
      renderRows(res.messages, append);
      listNext = res.next;
      $('results-more').hidden = !listNext;
    } catch (e) {
      if (e.status === 401) return;
      $('search-error').textContent = errText(e);
      $('search-error').hidden = false;
    }
  }

  function messages(state, params) {
    show('messages');
    setText('messages-title', state === 'dead' ? 'Dead letters' : 'Messages');
    $('search-state').value = state;
    $('search-id').value = '';
    $('search-key').value = '';
    $('search-dest').value = params.get('dest') || '';
    $('search-from').value = isoToLocal(params.get('from'));
    $('search-to').value = isoToLocal(params.get('to'));
    adminShow($('dead-actions'), state === 'dead');
    $('purge-all-confirm').hidden = true;
    const q = new URLSearchParams({ state: state, limit: '50' });
    for (const k of ['dest', 'from', 'to']) if (params.get(k)) q.set(k, params.get(k));
    listQuery = q.toString();
    listNext = '';
    fetchList(false);
  }

  async function search(ev) {
    ev.preventDefault();
    const id = $('search-id').value.trim().toLowerCase();
    const key = $('search-key').value;
    $('search-error').hidden = true;
    if (id) {
      if (!/^[0-9a-v]{13}$/.test(id)) {
        $('search-error').textContent = 'An ID is 13 characters of 0-9 and a-v.';
        $('search-error').hidden = false;
        return;
      }
      location.hash = '#/message/' + id;
      return;
    }
    if (key) {
      listQuery = 'key=' + encodeURIComponent(key);
      listNext = '';
      fetchList(false);
      return;
    }
    const state = $('search-state').value;
    const p = new URLSearchParams();
    if ($('search-dest').value) p.set('dest', $('search-dest').value);
    if ($('search-from').value) p.set('from', localToISO($('search-from').value));
    if ($('search-to').value) p.set('to', localToISO($('search-to').value));
    const h = '#/' + (state === 'dead' ? 'dead' : 'messages') + (p.toString() ? '?' + p : '');
    if (location.hash === h) router(); else location.hash = h;
  }

  // ---- one message ----
  function hexdump(bytes) {
    const lines = [];
    for (let off = 0; off < bytes.length; off += 16) {
      const row = bytes.subarray(off, off + 16);
      let hex = '';
      let asc = '';
      for (let i = 0; i < 16; i++) {
        if (i < row.length) {
          hex += row[i].toString(16).padStart(2, '0') + ' ';
          asc += row[i] >= 0x20 && row[i] < 0x7f ? String.fromCharCode(row[i]) : '.';
        } else {
          hex += '   ';
        }
        if (i === 7) hex += ' ';
      }
      lines.push(off.toString(16).padStart(8, '0') + '  ' + hex + ' |' + asc + '|');
    }
    return lines.join('\n');
  }

  function utf8(bytes) {
    try { return new TextDecoder('utf-8', { fatal: true }).decode(bytes); } catch (e) { return null; }
  }

  const HEX_LIMIT = 64 * 1024;
  function renderPayload(view) {
    const bytes = current.bytes;
    const text = utf8(bytes);
    let out;
    if (bytes.length === 0) {
      out = '(empty payload)';
    } else if (view === 'text') {
      out = text === null ? '(not UTF-8 text: see Hex)' : text;
    } else if (view === 'json') {
      if (text === null) out = '(not UTF-8 text, so not JSON: see Hex)';
      else {
        try { out = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { out = '(not JSON: ' + e.message + ')'; }
      }
    } else {
      out = hexdump(bytes.subarray(0, HEX_LIMIT));
      if (bytes.length > HEX_LIMIT) out += '\n… the first 64 KiB of ' + fmtNum(bytes.length) + ' bytes';
    }
    setText('payload', out);
    for (const b of ['pv-text', 'pv-json', 'pv-hex']) $(b).classList.toggle('active', $(b).dataset.view === view);
  }

  function defaultView(bytes) {
    const text = utf8(bytes);
    if (text === null) return 'hex';
    try { JSON.parse(text); return 'json'; } catch (e) { return 'text'; }
  }

  async function message(id) {
    show('message');
    const gen = viewGen;
    setText('msg-id', id);
    $('msg-notfound').hidden = true;
    $('msg-body').hidden = true;
    $('msg-done').hidden = !flash;
    setText('msg-done', flash);
    flash = '';
    let m;
    try {
      m = await api('GET', 'messages/' + id);
    } catch (e) {
      if (gen !== viewGen || e.status === 401) return;
      if (e.status === 404) {
        current = null;
        $('msg-notfound').hidden = false;
        return;
      }
      toast(errText(e));
      return;
    }
    if (gen !== viewGen) return;
    const bin = atob(m.payload || '');
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    current = { id: m.id, state: m.state, bytes: bytes };
    setText('msg-state', m.state);
    setText('msg-dest', m.dest);
    setText('msg-due', fmtTime(m.due));
    setText('msg-expires', m.expires ? fmtTime(m.expires) : 'never');
    setText('msg-key', m.key || '—');
    setText('msg-attempts', String(m.attempts));
    setText('msg-reason', m.reason || (m.state === 'dead' ? '—' : 'none recorded (the engine keeps the error of dead letters only)'));
    setText('msg-deadat', m.dead_at ? fmtTime(m.dead_at) : '—');
    setText('msg-native', m.native ? 'yes: the broker fires it' : 'no');
    const tb = $('msg-headers').tBodies[0];
    tb.replaceChildren();
    for (const h of m.headers) {
      const tr = el('tr');
      tr.append(el('td', h.key), el('td', h.value));
      tb.appendChild(tr);
    }
    if (m.headers.length === 0) {
      const tr = el('tr');
      const td = el('td', 'no headers', 'muted');
      td.colSpan = 2;
      tr.appendChild(td);
      tb.appendChild(tr);
    }
    setText('payload-size', '(' + fmtNum(m.payload_size) + ' bytes)');
    renderPayload(defaultView(bytes));
    adminShow($('actions'), m.state === 'pending' || m.state === 'dead');
    $('pending-actions').hidden = m.state !== 'pending';
    $('dead-letter-actions').hidden = m.state !== 'dead';
    for (const b of ['btn-cancel-confirm', 'btn-purge-confirm']) $(b).hidden = true;
    $('resched-at').value = isoToLocal(m.due);
    $('msg-body').hidden = false;
  }

  // act runs one write for the message page, then shows the page again with
  // a confirmation (or the message's absence, when the write removed it).
  async function act(method, path, body, done) {
    if (!current) return;
    const id = current.id;
    try {
      await api(method, path, body);
      flash = done;
      message(id);
    } catch (e) {
      if (e.status !== 401) toast(errText(e));
    }
  }

  function bind() {
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $('login-token').value.trim());
      $('login-token').value = '';
      router();
    });
    $('forget-token').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin('');
    });
    $('search-form').addEventListener('submit', search);
    $('results-more').addEventListener('click', () => fetchList(true));
    for (const b of ['pv-text', 'pv-json', 'pv-hex']) {
      $(b).addEventListener('click', () => { if (current) renderPayload($(b).dataset.view); });
    }
    $('btn-cancel').addEventListener('click', () => { $('btn-cancel-confirm').hidden = false; });
    $('btn-cancel-confirm').addEventListener('click', () =>
      act('DELETE', 'messages/' + current.id, undefined, 'Cancelled: this message will not be delivered.'));
    $('btn-run-now').addEventListener('click', () =>
      act('POST', 'messages/' + current.id + '/reschedule', { in: '0s' }, 'Due now: it fires at the next tick.'));
    $('btn-reschedule').addEventListener('click', () => {
      const v = $('resched-at').value;
      if (!v) { toast('Pick a new due time first.'); return; }
      act('POST', 'messages/' + current.id + '/reschedule', { due: localToISO(v) }, 'Rescheduled.');
    });
    $('btn-replay').addEventListener('click', () =>
      act('POST', 'dead/replay', { ids: [current.id] }, 'Replayed: pending again, due now, attempts reset.'));
    $('btn-purge').addEventListener('click', () => { $('btn-purge-confirm').hidden = false; });
    $('btn-purge-confirm').addEventListener('click', () =>
      act('POST', 'dead/purge', { ids: [current.id] }, 'Purged: the dead letter is deleted.'));
    $('purge-all').addEventListener('click', () => { $('purge-all-confirm').hidden = false; });
    $('purge-all-confirm').addEventListener('click', async () => {
      try {
        const r = await api('POST', 'dead/purge', { all: true });
        toast('Purged ' + r.purged + ' dead letters.', true);
        router();
      } catch (e) {
        if (e.status !== 401) toast(errText(e));
      }
    });
  }

  async function router() {
    viewGen++;
    const h = location.hash || '#/';
    if (!info) {
      try {
        await loadInfo();
      } catch (e) {
        if (e.status !== 401) toast(errText(e));
        return;
      }
    }
    const [path, qs] = h.slice(1).split('?');
    const params = new URLSearchParams(qs || '');
    const m = path.match(/^\/message\/([0-9a-v]{13})$/);
    if (m) return message(m[1]);
    if (path === '/messages') return messages('pending', params);
    if (path === '/dead') return messages('dead', params);
    return overview();
  }

  // A token can arrive in the fragment (#token=...), which browsers never
  // send to servers; it moves to session storage and leaves the address bar.
  function takeToken() {
    const m = location.hash.match(/^#token=([^&]*)$/);
    if (!m) return;
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search + '#/');
  }

  takeToken();
  bind();
  window.addEventListener('hashchange', router);
  router();
})();
