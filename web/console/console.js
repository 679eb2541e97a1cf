// Switchyard web console: plain JavaScript over the admin API (same origin), no framework.
// The key lives in sessionStorage for this tab only. Every view reads the API afresh; errors
// from the API (RFC 9457 problem documents) are shown next to the field their path names.
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const session = {
  get tenant() { return sessionStorage.getItem('sy-tenant'); },
  get key() { return sessionStorage.getItem('sy-key'); },
};

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) el.append(c.nodeType ? c : String(c));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { Authorization: `Bearer ${session.key}`, ...headers } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (r.status === 204) return { data: null, etag: null };
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) throw new ApiError(r.status, data);
  return { data, etag: r.headers.get('ETag') };
}

const t = () => encodeURIComponent(session.tenant);
const base = () => `/v1/tenants/${t()}`;

/// Every page of a list.
async function all(path) {
  const out = [];
  let cursor = '';
  for (;;) {
    const sep = path.includes('?') ? '&' : '?';
    const { data } = await api('GET', `${path}${sep}limit=500&cursor=${encodeURIComponent(cursor)}`);
    out.push(...data.items);
    if (!data.next_cursor) return out;
    cursor = data.next_cursor;
  }
}

function when(unix) {
  return unix ? new Date(unix * 1000).toLocaleString() : '';
}

function errorBox(e) {
  return h('p', { class: 'error', role: 'alert' }, e instanceof ApiError ? `${e.message}` : String(e));
}

// ---- views -------------------------------------------------------------------------------

const views = {};

views.users = async (view) => {
  const users = await all(`${base()}/users`);
  const table = h('table', {},
    h('thead', {}, h('tr', {}, h('th', { text: 'Extension' }), h('th', { text: 'Name' }),
      h('th', { text: 'Mailbox' }), h('th', { text: 'Registered contacts' }))),
    h('tbody', { id: 'user-rows' }));
  view.append(h('h2', { text: 'Users' }), table);
  for (const u of users) {
    const regs = h('td', { class: 'muted', text: '…' });
    $('#user-rows', table).append(h('tr', { 'data-extension': u.extension },
      h('td', { text: u.extension }), h('td', { text: u.display_name }),
      h('td', { text: u.mailbox || '' }), regs));
    api('GET', `${base()}/users/${encodeURIComponent(u.extension)}/registrations`).then(({ data }) => {
      regs.textContent = data.length
        ? data.map((b) => `${b.transport} ${b.source} (${b.user_agent || 'unknown phone'})`).join('; ')
        : 'none';
      regs.classList.toggle('muted', !data.length);
    }).catch(() => { regs.textContent = '?'; });
  }
  const form = h('form', { id: 'new-user', 'aria-labelledby': 'new-user-title' },
    h('h3', { id: 'new-user-title', text: 'Add a user' }),
    h('label', {}, 'Extension ', h('input', { name: 'extension', required: true, inputmode: 'numeric' })),
    h('label', {}, 'Name ', h('input', { name: 'display_name' })),
    h('label', {}, 'SIP password ', h('input', { name: 'password', type: 'password', autocomplete: 'new-password' })),
    h('button', { type: 'submit', class: 'primary', text: 'Add user' }),
    h('p', { class: 'status', role: 'status' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const f = new FormData(form);
    const body = { extension: f.get('extension'), username: f.get('extension'), display_name: f.get('display_name') };
    if (f.get('password')) body.password = f.get('password');
    try {
      await api('POST', `${base()}/users`, body);
      show('users', `User ${body.extension} added.`);
    } catch (e) {
      showErrors(form, e);
    }
  });
  view.append(form);
};

function describe(target) {
  if (!target) return '';
  const { type, ...rest } = target;
  const args = Object.values(rest).join(' ');
  return `${type.replace(/_/g, ' ')}${args ? ` ${args}` : ''}`;
}

views.ivrs = async (view) => {
  const { data: menus, etag } = await api('GET', `${base()}/ivrs`);
  view.append(h('h2', { text: 'IVR menus' }),
    h('p', { class: 'muted', text: 'Each menu with its prompts and digit routes. Edit a route or a prompt list and save: the whole graph is checked as one document, and problems appear where they are.' }));
  const form = h('form', { id: 'ivr-form' });
  for (const [id, m] of Object.entries(menus)) {
    const routes = h('ul', { 'aria-label': `Routes of ${id}` });
    (m.routes || []).forEach((r, i) => {
      routes.append(h('li', { class: 'route', 'data-path': `ivrs.${id}.routes.${i}` },
        h('label', {}, 'Digits ', h('input', { class: 'digits', name: `${id}.routes.${i}.digits`, value: r.digits })),
        ' → ',
        h('label', {}, 'Target ', h('input', { class: 'target', name: `${id}.routes.${i}.target`, value: JSON.stringify(r.target) })),
        h('span', { class: 'muted', text: ` (${describe(r.target)})` })));
    });
    form.append(h('fieldset', { class: 'menu', 'data-path': `ivrs.${id}` },
      h('legend', {}, h('strong', { text: id }), m.name ? ` — ${m.name}` : ''),
      h('label', { 'data-path': `ivrs.${id}.prompts` }, 'Prompts ',
        h('input', { name: `${id}.prompts`, value: (m.prompts || []).join(', '), size: 50 })),
      h('p', { class: 'muted', text: `Waits ${m.timeout_secs} s, retries ${m.max_retries}, then ${describe(m.on_exhausted)}.` }),
      routes));
  }
  form.append(h('button', { type: 'submit', class: 'primary', text: 'Save menus' }),
    h('p', { class: 'status', role: 'status' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const next = structuredClone(menus);
    try {
      for (const [id, m] of Object.entries(next)) {
        m.prompts = form.elements[`${id}.prompts`].value.split(',').map((s) => s.trim()).filter(Boolean);
        (m.routes || []).forEach((r, i) => {
          r.digits = form.elements[`${id}.routes.${i}.digits`].value.trim();
          const field = form.elements[`${id}.routes.${i}.target`];
          try {
            r.target = JSON.parse(field.value);
          } catch {
            throw new ApiError(400, { detail: 'a target is not JSON', errors: [{ path: `ivrs.${id}.routes.${i}`, message: 'target must be JSON, e.g. {"type": "user", "extension": "100"}' }] });
          }
        });
      }
      await api('PUT', `${base()}/ivrs`, next, { 'If-Match': etag });
      show('ivrs', 'Menus saved: new calls use them now.');
    } catch (e) {
      showErrors(form, e);
    }
  });
  view.append(form);
};

views.mailboxes = async (view) => {
  const { data: tenant } = await api('GET', base());
  view.append(h('h2', { text: 'Voicemail' }));
  for (const mb of tenant.mailboxes || []) {
    const msgs = await all(`${base()}/mailboxes/${encodeURIComponent(mb.id)}/messages`);
    const rows = msgs.map((m) => h('tr', { 'data-message': m.id },
      h('td', { text: when(m.received_unix) }), h('td', { text: m.caller }),
      h('td', { text: `${(m.duration_ms / 1000).toFixed(1)} s` }), h('td', { text: m.folder }),
      h('td', {}, h('audio', { controls: true, preload: 'none', src: '',
        'data-src': `${base()}/mailboxes/${encodeURIComponent(mb.id)}/messages/${encodeURIComponent(m.id)}/audio`,
        'aria-label': `Message from ${m.caller}` }),
      h('button', { type: 'button', text: 'Play', onclick: (ev) => play(ev.target.previousSibling) }))));
    view.append(h('h3', { text: `Mailbox ${mb.id}` }),
      msgs.length
        ? h('table', {}, h('thead', {}, h('tr', {}, ['Received', 'Caller', 'Length', 'Folder', 'Audio'].map((x) => h('th', { text: x })))), h('tbody', {}, rows))
        : h('p', { class: 'muted', text: 'No messages.' }));
  }
};

/// Audio needs the key, which an <audio src> cannot send: fetch it and play a blob.
async function play(audio) {
  const r = await fetch(audio.dataset.src, { headers: { Authorization: `Bearer ${session.key}` } });
  if (!r.ok) return;
  audio.src = URL.createObjectURL(await r.blob());
  await audio.play().catch(() => {});
  audio.dataset.loaded = 'true';
}

views.calllog = async (view) => {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const form = h('form', { id: 'filters', class: 'row' },
    h('label', {}, 'Number ', h('input', { name: 'number', value: params.get('number') || '' })),
    h('label', {}, 'Direction ', h('select', { name: 'direction' },
      ['', 'inbound', 'outbound', 'internal'].map((d) => h('option', { value: d, selected: params.get('direction') === d, text: d || 'any' })))),
    h('label', {}, 'Disposition ', h('select', { name: 'disposition' },
      ['', 'answered', 'no_answer', 'busy', 'cancelled', 'rejected', 'failed'].map((d) => h('option', { value: d, selected: params.get('disposition') === d, text: d || 'any' })))),
    h('button', { type: 'submit', text: 'Filter' }));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams([...new FormData(form)].filter(([, v]) => v));
    location.hash = `calllog?${q}`;
  });
  const q = new URLSearchParams([...params].filter(([k]) => ['number', 'direction', 'disposition'].includes(k)));
  q.set('limit', '100');
  const { data } = await api('GET', `${base()}/call-logs?${q}`);
  const { data: stats } = await api('GET', `${base()}/call-logs/stats?${q}`);
  view.append(h('h2', { text: 'Call log' }), form,
    h('p', {}, `${stats.calls} calls, ${stats.answered} answered (${Math.round(stats.answer_rate * 100)} %), average ${stats.average_duration_secs.toFixed(0)} s`,
      stats.average_mos ? `, average MOS ${stats.average_mos}` : ''),
    h('table', {}, h('thead', {}, h('tr', {}, ['Start', 'From', 'To', 'Direction', 'Result', 'Length', 'Path', 'Quality'].map((x) => h('th', { text: x })))),
      h('tbody', {}, data.items.map((c) => h('tr', {},
        h('td', { text: when(c.start_unix) }), h('td', { text: c.from }), h('td', { text: c.to }),
        h('td', { text: c.direction }), h('td', { text: `${c.disposition} (${c.hangup_cause})` }),
        h('td', { text: `${c.billed_secs} s` }), h('td', { text: c.path }),
        h('td', { text: c.quality ? `MOS ${c.quality.mos.toFixed(2)}, lost ${c.quality.packets_lost}, jitter ${c.quality.jitter_ms.toFixed(1)} ms` : '' }))))));
};

views.live = async (view) => {
  const calls = await all(`${base()}/calls`);
  view.append(h('h2', { text: 'Live calls' }),
    calls.length
      ? h('table', {}, h('thead', {}, h('tr', {}, ['From', 'To', 'State', 'Length', 'App', 'Codec', ''].map((x) => h('th', { text: x })))),
        h('tbody', {}, calls.map((c) => h('tr', {},
          h('td', { text: c.from }), h('td', { text: c.to }), h('td', { text: c.state }),
          h('td', { text: `${c.duration_secs ?? ''} s` }), h('td', { text: c.app || '' }), h('td', { text: c.codec || '' }),
          h('td', {}, h('button', { type: 'button', class: 'danger', text: 'Hang up', onclick: async () => {
            await api('DELETE', `${base()}/calls/${c.id}`).catch(() => {});
            show('live', 'Hung up.');
          } }))))))
      : h('p', { class: 'muted', text: 'No calls in progress.' }),
    h('button', { type: 'button', text: 'Refresh', onclick: () => show('live') }));
};

/// Every node of the service (`GET /v1/cluster`): only the admin key may see it, so a tenant
/// key gets no table.
async function serviceTable() {
  const cluster = await api('GET', '/v1/cluster').then((r) => r.data).catch(() => null);
  if (!cluster) return [];
  const ok = { ready: 'ok', draining: 'muted', degraded: 'error', unready: 'error', gone: 'error' };
  const spool = (n) => n.stores.map((s) => `${s.name}: ${s.spool_depth}${s.spool_depth ? ` (oldest ${s.oldest_age_secs} s)` : ''}`).join('; ');
  return [h('h2', { text: 'Service' }),
    h('table', { id: 'cluster' },
      h('thead', {}, h('tr', {}, ['Node', 'State', 'Live calls', 'Registrations', 'Config revision', 'Config lag', 'Spool', 'Last seen'].map((x) => h('th', { text: x })))),
      h('tbody', {}, cluster.nodes.map((n) => h('tr', { 'data-node': n.node, 'data-state': n.state },
        h('td', { text: n.node + (n.node === cluster.this_node ? ' (this node)' : '') }),
        h('td', { class: ok[n.state] || '', text: n.state }),
        h('td', { text: String(n.live_calls) }), h('td', { text: String(n.registrations) }),
        h('td', { text: `${n.config.revision} (${n.config.source})` }),
        h('td', { text: n.config.lag_revisions ? `${n.config.lag_revisions} revisions, ${n.config.lag_seconds} s` : 'none' }),
        h('td', { text: spool(n) }),
        h('td', { text: n.last_seen_secs ? `${n.last_seen_secs} s ago` : 'now' })))))];
}

views.health = async (view) => {
  const ready = await fetch('/health/ready').then((r) => r.json()).catch(() => ({ status: 'unreachable' }));
  const { data: node } = await api('GET', '/v1/node');
  const service = await serviceTable();
  view.append(...service, h('h2', { text: 'Node health' }),
    h('dl', { class: 'kv' },
      h('dt', { text: 'Ready' }), h('dd', { class: ready.status === 'ok' ? 'ok' : 'error', text: ready.status + (ready.reason ? ` — ${ready.reason}` : '') }),
      h('dt', { text: 'Version' }), h('dd', { text: node.version }),
      h('dt', { text: 'SIP listeners' }), h('dd', { text: node.listeners.join(', ') }),
      ...node.stores.flatMap((s) => [
        h('dt', { text: s.name }),
        h('dd', { text: `${s.failing_secs ? `failing for ${s.failing_secs} s` : 'working'}; spool ${s.spool_depth} waiting (oldest ${s.oldest_age_secs} s)` }),
      ])));
};

// ---- form errors -----------------------------------------------------------------------------

function clearErrors(form) {
  for (const e of form.querySelectorAll('.field-error')) e.remove();
  for (const e of form.querySelectorAll('[aria-invalid]')) e.removeAttribute('aria-invalid');
  $('.status', form).textContent = '';
}

/// Shows each `{path, message}` of a problem where its path points: the element whose
/// data-path (or input name) is the longest prefix of the path; the rest at the form's foot.
function showErrors(form, e) {
  const errors = (e.problem && e.problem.errors) || [];
  const status = $('.status', form);
  status.textContent = e.message;
  status.className = 'status error';
  for (const err of errors) {
    const path = err.path.replace(/^ivrs\./, 'ivrs.');
    let best = null;
    for (const el of form.querySelectorAll('[data-path], [name]')) {
      const p = el.dataset.path || el.getAttribute('name');
      if ((path === p || path.startsWith(`${p}.`)) && (!best || p.length > (best.dataset.path || best.getAttribute('name')).length)) best = el;
    }
    const msg = h('span', { class: 'field-error', role: 'alert', text: err.message });
    if (best) {
      // A route's own path names its destination (the validator reports targets there).
      const input = best.matches('input, select, textarea') ? best : ($('input.target', best) || $('input, select, textarea', best));
      if (input) input.setAttribute('aria-invalid', 'true');
      best.append(msg);
    } else {
      status.after(msg);
    }
  }
}

// ---- navigation ----------------------------------------------------------------------------

async function show(name, note) {
  const view = $('#view');
  view.replaceChildren();
  for (const a of document.querySelectorAll('nav a')) {
    a.toggleAttribute('aria-current', a.getAttribute('href') === `#${name}`);
    if (a.getAttribute('href') === `#${name}`) a.setAttribute('aria-current', 'page');
  }
  if (note) view.append(h('p', { class: 'ok', role: 'status', id: 'note', text: note }));
  try {
    await (views[name] || views.users)(view);
  } catch (e) {
    view.append(errorBox(e));
  }
  view.dataset.ready = name;
}

function route() {
  if (!session.key) {
    $('#signin').hidden = false;
    $('#nav').hidden = true;
    $('#view').replaceChildren();
    return;
  }
  $('#signin').hidden = true;
  $('#nav').hidden = false;
  show((location.hash.slice(1) || 'users').split('?')[0]);
}

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', () => {
  $('#signin').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem('sy-tenant', $('#tenant').value.trim());
    sessionStorage.setItem('sy-key', $('#key').value.trim());
    try {
      await api('GET', base());
      $('#signin-error').textContent = '';
      route();
    } catch (e) {
      sessionStorage.clear();
      $('#signin-error').textContent = e.status === 404 ? 'No such tenant for this key.' : e.message;
    }
  });
  $('#signout').addEventListener('click', () => {
    sessionStorage.clear();
    location.hash = '';
    route();
  });
  route();
});
