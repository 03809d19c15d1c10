// Trace waterfall: one row per span, a bar positioned by start/duration, markers for span
// events (first token, tool_use), and a summary of TTFT, tool phases and tokens.
// Input: one trace from GET /v1/gateway/traces. DOM only through textContent.

import { formatMs } from './timeline.js';

/**
 * A span of a trace as served by GET /v1/gateway/traces.
 * @typedef {object} TraceSpan
 * @property {string} span_id
 * @property {string|null} parent_id
 * @property {string} name
 * @property {string} kind
 * @property {number} start_ms     Relative to the trace start.
 * @property {number} duration_ms
 * @property {string} status
 * @property {Record<string, any>} attributes
 * @property {{name: string, t_ms: number}[]} events
 */

/**
 * Choose the trace to show: the one whose trace_id matches, else the most recent.
 * @param {object[]} traces
 * @param {string} [traceId]
 * @returns {{trace: object|null, matched: boolean}}
 */
export function pickTrace(traces, traceId) {
  if (!Array.isArray(traces) || traces.length === 0) return { trace: null, matched: false };
  const hit = traceId ? traces.find((t) => t.trace_id === traceId) : undefined;
  if (hit) return { trace: hit, matched: true };
  const newest = [...traces].sort((a, b) => (b.start_unix_ms ?? 0) - (a.start_unix_ms ?? 0))[0];
  return { trace: newest, matched: false };
}

/**
 * Order spans depth-first under their parents (children by start time), with their depth.
 * @param {TraceSpan[]} spans
 * @returns {{span: TraceSpan, depth: number}[]}
 */
export function orderSpans(spans) {
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  for (const s of spans) {
    const parent = s.parent_id && ids.has(s.parent_id) ? s.parent_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  for (const list of children.values()) list.sort((a, b) => a.start_ms - b.start_ms);
  const out = [];
  const seen = new Set();
  const walk = (parent, depth) => {
    for (const s of children.get(parent) ?? []) {
      if (seen.has(s.span_id)) continue;
      seen.add(s.span_id);
      out.push({ span: s, depth });
      walk(s.span_id, depth + 1);
    }
  };
  walk(null, 0);
  return out;
}

/**
 * An event's offset from the trace start. Event times are taken as relative to the trace
 * start (like start_ms); a time before the span's own start can only be span-relative.
 * @param {TraceSpan} span
 * @param {{t_ms: number}} event
 * @returns {number}
 */
export function eventOffset(span, event) {
  return event.t_ms < span.start_ms ? span.start_ms + event.t_ms : event.t_ms;
}

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/**
 * Headline figures of a trace: TTFT, tool phases and tokens.
 * @param {object} trace
 * @returns {{ttftMs: number|null, tools: {name: string, ms: number}[], inputTokens: number, outputTokens: number}}
 */
export function summarize(trace) {
  let ttftMs = null;
  let inputTokens = 0;
  let outputTokens = 0;
  const tools = [];
  for (const s of trace.spans ?? []) {
    for (const e of s.events ?? []) {
      if (/first.?token/i.test(e.name)) {
        const t = eventOffset(s, e);
        if (ttftMs == null || t < ttftMs) ttftMs = t;
      }
    }
    const a = s.attributes ?? {};
    if (s.kind?.toUpperCase() === 'CLIENT' || /^chat\b/.test(s.name)) {
      inputTokens += num(a['gen_ai.usage.input_tokens']) ?? 0;
      outputTokens += num(a['gen_ai.usage.output_tokens']) ?? 0;
    }
    if (/^execute_tool\b/.test(s.name)) {
      tools.push({ name: a['gen_ai.tool.name'] ?? s.name.replace(/^execute_tool\s*/, ''), ms: s.duration_ms });
    }
  }
  return { ttftMs, tools, inputTokens, outputTokens };
}

function el(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

function spanLabel(span) {
  const a = span.attributes ?? {};
  const parts = [formatMs(span.duration_ms)];
  const inT = num(a['gen_ai.usage.input_tokens']);
  const outT = num(a['gen_ai.usage.output_tokens']);
  if (inT != null || outT != null) parts.push(`${inT ?? 0} in / ${outT ?? 0} out tok`);
  return parts.join(' · ');
}

/**
 * Render a trace waterfall into `container` (its children are replaced).
 * @param {HTMLElement} container
 * @param {object|null} trace   One trace from /v1/gateway/traces, or null.
 * @param {object} [options]
 * @param {boolean} [options.matched=true]  False adds a note that this is the most recent trace, not the stream's own.
 * @returns {void}
 */
export function renderWaterfall(container, trace, { matched = true } = {}) {
  const doc = container.ownerDocument;
  if (!trace) {
    container.replaceChildren(el(doc, 'p', 'muted', 'No trace recorded yet.'));
    return;
  }
  const spans = trace.spans ?? [];
  const total = Math.max(
    1,
    num(trace.duration_ms) ?? 0,
    ...spans.map((s) => s.start_ms + s.duration_ms),
  );
  const pct = (ms) => `${Math.min(100, Math.max(0, (ms / total) * 100)).toFixed(3)}%`;

  const sum = summarize(trace);
  const head = el(doc, 'div', 'wf-summary');
  head.dataset.traceId = trace.trace_id ?? '';
  const facts = [
    `${trace.route ?? ''} ${trace.model ?? ''}`.trim(),
    `outcome ${trace.outcome ?? '?'}`,
    `total ${formatMs(trace.duration_ms)}`,
    `TTFT ${formatMs(sum.ttftMs)}`,
    ...sum.tools.map((t) => `tool ${t.name} ${formatMs(t.ms)}`),
    `tokens ${sum.inputTokens} in / ${sum.outputTokens} out`,
  ];
  for (const f of facts) head.append(el(doc, 'span', 'wf-fact', f));
  const idLine = el(doc, 'div', 'wf-id muted', `trace ${trace.trace_id ?? '?'}${matched ? '' : ' (most recent trace; not this stream’s)'}`);

  const rows = el(doc, 'ol', 'wf-rows');
  rows.setAttribute('aria-label', 'spans');
  for (const { span, depth } of orderSpans(spans)) {
    const row = el(doc, 'li', 'wf-row');
    row.dataset.kind = (span.kind ?? '').toLowerCase();
    row.dataset.status = (span.status ?? '').toLowerCase();
    const name = el(doc, 'div', 'wf-name');
    name.style.paddingInlineStart = `${depth * 0.9}em`;
    name.append(el(doc, 'span', 'wf-span-name', span.name), el(doc, 'span', 'wf-span-meta muted', spanLabel(span)));
    const track = el(doc, 'div', 'wf-track');
    const bar = el(doc, 'div', 'wf-bar');
    bar.style.left = pct(span.start_ms);
    bar.style.width = `max(2px, ${pct(span.duration_ms)})`;
    bar.title = `${span.name}: starts at ${formatMs(span.start_ms)}, lasts ${formatMs(span.duration_ms)}`;
    track.append(bar);
    let prevT = -Infinity;
    for (const e of [...(span.events ?? [])].sort((a, b) => eventOffset(span, a) - eventOffset(span, b))) {
      const t = eventOffset(span, e);
      const m = el(doc, 'div', 'wf-marker');
      // A marker close to the previous one puts its label on the other side (no overlap).
      if ((t - prevT) / total < 0.2 && !(track.lastChild?.dataset.flip === 'true')) m.dataset.flip = 'true';
      prevT = t;
      if (t / total > 0.75) m.dataset.align = 'end'; // keep the label inside the track
      m.dataset.event = e.name;
      m.style.left = pct(t);
      m.title = `${e.name} at ${formatMs(t)}`;
      const tag = el(doc, 'span', 'wf-marker-label', `${e.name.replace(/_/g, ' ')} ${formatMs(t)}`);
      m.append(tag);
      track.append(m);
    }
    row.append(name, track);
    rows.append(row);
  }
  const axis = el(doc, 'div', 'wf-axis muted');
  axis.append(el(doc, 'span', '', '0'), el(doc, 'span', '', formatMs(total / 2)), el(doc, 'span', '', formatMs(total)));
  container.replaceChildren(head, idLine, rows, axis);
}
