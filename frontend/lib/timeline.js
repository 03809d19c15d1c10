// Tool timeline: one list item per tool call, with its phases (calling → executing →
// result) and their durations. DOM only through textContent (tool input/output is untrusted).

/**
 * Format milliseconds for people: "850 ms", "1.24 s".
 * @param {number|null|undefined} ms
 * @returns {string}
 */
export function formatMs(ms) {
  if (ms == null || !Number.isFinite(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

const MAX_OUTPUT_CHARS = 4000;

function el(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

function stringify(value) {
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/**
 * A tool timeline bound to an `<ol>`.
 *
 * Call `handle(event, tMs)` with every agent event (others are ignored) and the time since
 * the request started. Phases shown per tool:
 *  - calling: `tool_start` → `tool_executing` (the model generating the call; input streams in),
 *  - executing: `tool_executing` → `tool_result` (the gateway running the tool),
 *  - result: the output or error, with the gateway's `duration_ms`.
 */
export class ToolTimeline {
  /**
   * @param {HTMLOListElement} list   The list to fill.
   * @param {object} [options]
   * @param {HTMLElement} [options.emptyNote]  Shown while there are no calls.
   */
  constructor(list, { emptyNote } = {}) {
    this.list = list;
    this.doc = list.ownerDocument;
    this.emptyNote = emptyNote;
    /** @type {Map<string, object>} */
    this.calls = new Map();
  }

  /** Remove every entry. @returns {void} */
  reset() {
    this.calls.clear();
    this.list.replaceChildren();
    if (this.emptyNote) this.emptyNote.hidden = false;
  }

  /**
   * Update the timeline from one agent event.
   * @param {{type: string, data: any}} event
   * @param {number} tMs  Milliseconds since the request started.
   * @returns {void}
   */
  handle(event, tMs) {
    const d = event.data ?? {};
    switch (event.type) {
      case 'tool_start':
        this._start(d, tMs);
        break;
      case 'tool_input': {
        const c = this._get(d, tMs);
        c.input += d.partial ?? '';
        c.inputEl.textContent = c.input;
        break;
      }
      case 'tool_executing': {
        const c = this._get(d, tMs);
        c.tExec = tMs;
        if (d.input !== undefined) c.inputEl.textContent = stringify(d.input);
        this._phase(c, 'calling', `calling ${formatMs(tMs - c.tStart)}`, 'done');
        this._phase(c, 'executing', 'executing…', 'active');
        this._status(c, 'executing');
        break;
      }
      case 'tool_result': {
        const c = this._get(d, tMs);
        const isError = Boolean(d.is_error);
        const serverMs = Number.isFinite(d.duration_ms) ? d.duration_ms : c.tExec != null ? tMs - c.tExec : null;
        if (c.tExec == null) this._phase(c, 'calling', `calling ${formatMs(tMs - c.tStart)}`, 'done');
        this._phase(c, 'executing', `executed ${formatMs(serverMs)}`, 'done');
        this._phase(c, 'result', isError ? 'error' : 'result', isError ? 'error' : 'done');
        let out = isError ? (d.error ?? d.output) : d.output;
        out = stringify(out ?? '');
        if (out.length > MAX_OUTPUT_CHARS) out = `${out.slice(0, MAX_OUTPUT_CHARS)}\n… (${out.length - MAX_OUTPUT_CHARS} more characters)`;
        c.outputEl.textContent = out;
        c.outputWrap.hidden = false;
        c.li.classList.toggle('is-error', isError);
        c.li.dataset.durationMs = String(serverMs ?? '');
        this._status(c, isError ? 'error' : 'done', `${isError ? 'failed' : 'done'} in ${formatMs(serverMs)}`);
        break;
      }
      default:
        break;
    }
  }

  _get(d, tMs) {
    return this.calls.get(d.tool_id) ?? this._start(d, tMs);
  }

  _start(d, tMs) {
    const existing = this.calls.get(d.tool_id);
    if (existing) return existing;
    const doc = this.doc;
    const li = el(doc, 'li', 'tool');
    li.dataset.toolId = d.tool_id ?? '';
    li.dataset.toolName = d.tool_name ?? '';
    const head = el(doc, 'div', 'tool-head');
    head.append(el(doc, 'span', 'tool-name', d.tool_name ?? 'tool'));
    if (d.turn != null) head.append(el(doc, 'span', 'muted', `turn ${d.turn}`));
    head.append(el(doc, 'span', 'muted', `at ${formatMs(tMs)}`));
    const status = el(doc, 'span', 'tool-status', 'calling…');
    status.dataset.status = 'calling';
    head.append(status);
    const phases = el(doc, 'ol', 'phases');
    phases.setAttribute('aria-label', 'phases');
    const inputLabel = el(doc, 'div', 'tool-label', 'input');
    const inputEl = el(doc, 'pre', 'tool-input', '');
    const outputWrap = el(doc, 'div', 'tool-output-wrap');
    outputWrap.hidden = true;
    const outputEl = el(doc, 'pre', 'tool-output', '');
    outputWrap.append(el(doc, 'div', 'tool-label', 'output'), outputEl);
    li.append(head, phases, inputLabel, inputEl, outputWrap);
    this.list.append(li);
    if (this.emptyNote) this.emptyNote.hidden = true;
    const c = { li, status, phases, inputEl, outputEl, outputWrap, input: '', tStart: tMs, tExec: null, phaseEls: {} };
    this.calls.set(d.tool_id, c);
    this._phase(c, 'calling', 'calling…', 'active');
    return c;
  }

  _phase(c, name, text, state) {
    let p = c.phaseEls[name];
    if (!p) {
      p = el(this.doc, 'li', 'phase');
      p.dataset.phase = name;
      c.phases.append(p);
      c.phaseEls[name] = p;
    }
    p.textContent = text;
    p.dataset.state = state;
  }

  _status(c, status, text = status) {
    c.status.textContent = text;
    c.status.dataset.status = status;
  }
}
