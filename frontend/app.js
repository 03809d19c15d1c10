// Page logic of the reference frontend. The reusable parts live in lib/: the SSE parser
// (sse.js), the agent client (agent-client.js), the tool timeline and the trace waterfall.
// Model and tool text is only ever inserted with textContent / text nodes.

import { AgentStream } from './lib/agent-client.js';
import { ToolTimeline, formatMs } from './lib/timeline.js';
import { pickTrace, renderWaterfall } from './lib/waterfall.js';

const KEY_STORAGE = 'claude-gateway.apiKey';
const $ = (id) => document.getElementById(id);

const ui = {
  form: $('prompt-form'),
  prompt: $('prompt'),
  thinking: $('opt-thinking'),
  tools: $('opt-tools'),
  model: $('opt-model'),
  send: $('send'),
  stop: $('stop'),
  apiKey: $('api-key'),
  simBanner: $('sim-banner'),
  version: $('gw-version'),
  banners: $('banners'),
  answer: $('answer'),
  reasoning: $('reasoning'),
  reasoningText: $('reasoning-text'),
  reasoningCount: $('reasoning-count'),
  timeline: $('timeline'),
  timelineEmpty: $('timeline-empty'),
  waterfall: $('waterfall'),
  traceRefresh: $('trace-refresh'),
  stat: {
    status: $('stat-status'),
    ttft: $('stat-ttft'),
    tokens: $('stat-tokens'),
    cost: $('stat-cost'),
    elapsed: $('stat-elapsed'),
  },
};

const timeline = new ToolTimeline(ui.timeline, { emptyNote: ui.timelineEmpty });

/** State of the current run (one stream, possibly resumed). */
let run = null;

// ---- settings -------------------------------------------------------------------------

function storedKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) ?? '';
  } catch {
    return '';
  }
}
ui.apiKey.value = storedKey();
ui.apiKey.addEventListener('change', () => {
  try {
    if (ui.apiKey.value) localStorage.setItem(KEY_STORAGE, ui.apiKey.value);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage unavailable (private mode): the key lives in the field only
  }
  loadInfo();
});

function authHeaders() {
  return ui.apiKey.value ? { 'x-api-key': ui.apiKey.value } : {};
}

async function loadInfo() {
  try {
    const res = await fetch('v1/gateway/info', { headers: authHeaders() });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const info = await res.json();
    ui.simBanner.hidden = !info.simulated;
    ui.version.textContent = info.version ? `v${info.version}` : '';
    const current = ui.model.value;
    const options = [new Option('gateway default', '')];
    for (const m of info.models ?? []) {
      const label = m === info.default_model ? `${m} (default)` : m;
      options.push(new Option(label, m));
    }
    ui.model.replaceChildren(...options);
    ui.model.value = current;
  } catch (err) {
    ui.version.textContent = `gateway info unavailable (${err.message})`;
  }
}

// ---- stats strip ----------------------------------------------------------------------

function setState(state, text = state) {
  document.body.dataset.state = state;
  ui.stat.status.textContent = text;
  const busy = ['connecting', 'streaming', 'reconnecting'].includes(state);
  ui.stop.disabled = !busy;
  ui.send.disabled = busy;
  ui.answer.setAttribute('aria-busy', String(busy));
}

function renderStats() {
  if (!run) return;
  const s = ui.stat;
  s.ttft.textContent = run.serverTtft != null ? formatMs(run.serverTtft) : run.ttft != null ? formatMs(run.ttft) : '…';
  const u = run.usage;
  if (u) s.tokens.textContent = `${u.input_tokens ?? 0} / ${u.output_tokens ?? 0}`;
  else s.tokens.textContent = run.tokenEvents ? `– / ~${run.tokenEvents}` : '–';
  s.cost.textContent = u && Number.isFinite(u.cost_usd) ? `$${u.cost_usd.toFixed(u.cost_usd < 0.01 ? 5 : 4)}` : '–';
  s.elapsed.textContent = formatMs((run.endedAt ?? performance.now()) - run.t0);
}

// ---- banners --------------------------------------------------------------------------

function clearBanners(kind) {
  for (const b of [...ui.banners.children]) if (!kind || b.dataset.kind === kind) b.remove();
}

/**
 * Show a banner. `retry` adds a Retry button that starts a new stream with the same request.
 */
function banner(kind, title, message, { retry = false, role = 'alert' } = {}) {
  clearBanners(kind);
  const b = document.createElement('div');
  b.className = `banner banner-${kind === 'reconnect' ? 'warn' : 'error'}`;
  b.dataset.kind = kind;
  b.setAttribute('role', role);
  const strong = document.createElement('strong');
  strong.textContent = title;
  const msg = document.createElement('span');
  msg.className = 'banner-msg';
  msg.textContent = message;
  b.append(strong, ' ', msg);
  if (retry && run) {
    const body = run.body;
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'retry';
    btn.textContent = 'Retry';
    btn.addEventListener('click', () => startRun(body));
    b.append(btn);
  }
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'banner-close';
  close.setAttribute('aria-label', 'Dismiss');
  close.textContent = '×';
  close.addEventListener('click', () => b.remove());
  b.append(close);
  ui.banners.append(b);
  return b;
}

// ---- answer and reasoning ---------------------------------------------------------------

function appendAnswer(text) {
  if (!run.answerBlock) {
    run.answerBlock = document.createElement('p');
    run.answerBlock.className = 'answer-block';
    run.answerBlock.append(document.createTextNode(''));
    ui.answer.append(run.answerBlock);
  }
  run.answerBlock.firstChild.appendData(text);
}

function appendReasoning(text) {
  if (!ui.reasoningText.firstChild) ui.reasoningText.append(document.createTextNode(''));
  ui.reasoningText.firstChild.appendData(text);
  run.thinkingChars += text.length;
  ui.reasoning.hidden = false;
  ui.reasoningCount.textContent = `(${run.thinkingChars} characters)`;
}

// ---- the stream -----------------------------------------------------------------------

function requestBody() {
  const body = { prompt: ui.prompt.value };
  if (ui.model.value) body.model = ui.model.value;
  if (ui.thinking.checked) body.thinking = true;
  body.tools = ui.tools.value
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  return body;
}

function resetView() {
  ui.answer.replaceChildren();
  ui.reasoningText.replaceChildren();
  ui.reasoningCount.textContent = '';
  ui.reasoning.open = false;
  ui.reasoning.hidden = true;
  timeline.reset();
  clearBanners();
  for (const k of Object.keys(ui.stat)) if (k !== 'status') ui.stat[k].textContent = '–';
}

function onEvent(ev) {
  const r = run;
  const t = performance.now() - r.t0;
  debug.events.push({ type: ev.type, seq: ev.seq });
  const d = ev.data ?? {};
  switch (ev.type) {
    case 'start':
      r.streamId = d.stream_id;
      r.traceId = d.trace_id;
      if (d.model) ui.stat.status.title = `model ${d.model}`;
      break;
    case 'token':
      r.ttft ??= t;
      r.tokenEvents += 1;
      r.text += d.text ?? '';
      appendAnswer(d.text ?? '');
      break;
    case 'thinking':
      r.ttft ??= t;
      appendReasoning(d.text ?? '');
      break;
    case 'tool_start':
    case 'tool_input':
      if (ev.type === 'tool_input') r.ttft ??= t;
      timeline.handle(ev, t);
      r.answerBlock = null; // text after a tool call starts a new paragraph
      break;
    case 'tool_executing':
    case 'tool_result':
      timeline.handle(ev, t);
      r.answerBlock = null;
      break;
    case 'usage':
      r.usage = d;
      break;
    case 'error':
      banner(
        'error',
        `Error: ${d.type ?? 'error'}.`,
        `${d.message ?? ''}${d.retry_after_ms ? ` (retry after ${formatMs(d.retry_after_ms)})` : ''}`,
        { retry: Boolean(d.retryable) },
      );
      break;
    case 'done':
      r.serverTtft = d.ttft_ms ?? null;
      if (d.usage) r.usage = d.usage;
      r.stopReason = d.stop_reason;
      break;
    case 'stream_end':
      debug.sawStreamEnd = true;
      break;
    default:
      break;
  }
  renderStats();
}

function onStatus(st) {
  switch (st.state) {
    case 'connecting':
      setState('connecting', 'connecting…');
      break;
    case 'streaming':
      setState('streaming', 'streaming');
      if (run.wasReconnecting) {
        run.wasReconnecting = false;
        clearBanners('reconnect');
      }
      break;
    case 'reconnecting':
      run.wasReconnecting = true;
      setState('reconnecting', `reconnecting (${st.attempt}/${st.maxAttempts})`);
      banner(
        'reconnect',
        'Connection lost.',
        `Reconnecting in ${formatMs(st.delayMs)} (try ${st.attempt} of ${st.maxAttempts})…`,
        { role: 'status' },
      );
      break;
    default:
      break;
  }
}

async function startRun(body = requestBody()) {
  if (!body.prompt?.trim() && !body.messages) {
    ui.prompt.focus();
    return;
  }
  run?.stream.stop();
  resetView();
  debug.events = [];
  debug.sawStreamEnd = false;
  const r = {
    body,
    t0: performance.now(),
    endedAt: null,
    ttft: null,
    serverTtft: null,
    usage: null,
    tokenEvents: 0,
    thinkingChars: 0,
    text: '',
    answerBlock: null,
    streamId: null,
    traceId: null,
    wasReconnecting: false,
    stream: null,
  };
  r.stream = new AgentStream({
    baseUrl: new URL('.', document.baseURI).href, // same origin, and works under a path prefix
    apiKey: ui.apiKey.value || undefined,
    body,
    onEvent: (ev) => run === r && onEvent(ev),
    onStatus: (st) => run === r && onStatus(st),
  });
  run = r;
  ui.answer.dataset.streaming = 'true';
  const ticker = setInterval(renderStats, 250);
  const result = await r.stream.start();
  clearInterval(ticker);
  if (run !== r) return; // superseded by a newer run
  r.endedAt = performance.now();
  delete ui.answer.dataset.streaming;
  clearBanners('reconnect');
  if (result.outcome === 'done') setState('done', r.stopReason ? `done (${r.stopReason})` : 'done');
  else if (result.outcome === 'stopped') setState('stopped', 'stopped');
  else {
    setState('failed', 'failed');
    const e = result.error;
    banner('error', e.type === 'stream_cut' || e.type === 'network_error' ? 'Connection failed.' : `Error: ${e.type}.`, e.message, {
      retry: e.retryable,
    });
  }
  renderStats();
  loadTrace(r.traceId);
}

// ---- trace waterfall ----------------------------------------------------------------------

async function loadTrace(traceId, attempts = 4) {
  for (let i = 0; i < attempts; i++) {
    try {
      const res = await fetch('v1/gateway/traces?limit=20', { headers: authHeaders() });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const { traces } = await res.json();
      const { trace, matched } = pickTrace(traces, traceId);
      if (matched || i === attempts - 1) {
        renderWaterfall(ui.waterfall, trace, { matched: matched || !traceId });
        return;
      }
    } catch (err) {
      if (i === attempts - 1) {
        const p = document.createElement('p');
        p.className = 'muted';
        p.textContent = `Trace unavailable (${err.message}).`;
        ui.waterfall.replaceChildren(p);
        return;
      }
    }
    await new Promise((res) => setTimeout(res, 400)); // spans may be exported just after the stream ends
  }
}

// ---- controls ---------------------------------------------------------------------------

ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  startRun();
});
ui.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    if (!ui.send.disabled) ui.form.requestSubmit();
  }
});
ui.stop.addEventListener('click', () => run?.stream.stop());
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && run && !ui.stop.disabled) {
    e.preventDefault();
    run.stream.stop();
  }
});
ui.traceRefresh.addEventListener('click', () => loadTrace(run?.traceId, 1));

// ---- debug hook (used by the end-to-end tests; harmless in production) --------------------

const debug = {
  events: [],
  sawStreamEnd: false,
  /** Drop the current connection without cancelling the stream, as a network cut would. */
  dropConnection: () => run?.stream.dropConnection() ?? false,
  get state() {
    return document.body.dataset.state;
  },
  get streamId() {
    return run?.streamId ?? null;
  },
  get text() {
    return run?.text ?? '';
  },
};
window.__gatewayDebug = debug;

setState('idle');
loadInfo();
