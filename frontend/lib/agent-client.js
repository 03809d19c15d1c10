// Reusable browser/node client for the gateway's agent stream (POST /v1/agent/stream).
//
// fetch + ReadableStream + the WHATWG SSE parser in ./sse.js. No EventSource (it cannot
// POST or send x-api-key). What it adds on top of a plain fetch:
//   * stop(): aborts the fetch AND calls POST /v1/agent/stream/{id}/cancel, so the gateway
//     stops the paid upstream call at once instead of keeping it for a resume;
//   * resume: on a network error, a stall, or a body that ends without `stream_end`
//     (a cut stream), reconnect through GET /v1/agent/stream/{id} with Last-Event-ID,
//     waiting 1 s, 2 s, 4 s (at most 3 tries in a row; a try that delivers new events
//     resets the count);
//   * de-duplication by seq: an event whose seq is <= the last one seen is dropped, so the
//     text assembled from `token` events has no duplicate or missing part across resumes.
//
// Events are delivered to `onEvent` as {type, data, id, seq} with `data` parsed from JSON.

import { SSEParser } from './sse.js';

/** Default reconnect delays in ms: the n-th try waits backoffMs[n-1]. */
export const DEFAULT_BACKOFF_MS = Object.freeze([1000, 2000, 4000]);

/**
 * An agent stream event as delivered to `onEvent`.
 * @typedef {object} AgentEvent
 * @property {string} type   Event name from the contract: start, token, thinking, tool_start,
 *   tool_input, tool_executing, tool_result, block_stop, turn, usage, error, done, stream_end.
 * @property {any} data      The event's JSON data, parsed (or the raw string if not JSON).
 * @property {string} id     The SSE id, `<stream_id>:<seq>`.
 * @property {number} seq    The sequence number from the id (-1 if the id has none).
 */

/**
 * Connection status changes, delivered to `onStatus`.
 * @typedef {object} AgentStatus
 * @property {'connecting'|'streaming'|'reconnecting'|'done'|'stopped'|'failed'} state
 * @property {number} [attempt]   Reconnect try number (1-based) while reconnecting.
 * @property {number} [maxAttempts]
 * @property {number} [delayMs]   Wait before this try.
 * @property {string} [reason]    Why a reconnect is needed: 'network', 'cut', 'stall', 'http'.
 * @property {Error}  [error]     The error, when failed.
 */

/**
 * How a stream finished (the value `start()` resolves to).
 * @typedef {object} AgentResult
 * @property {'done'|'stopped'|'failed'} outcome
 * @property {string|null} streamId
 * @property {string} lastEventId
 * @property {number} reconnects  Number of successful resumes.
 * @property {AgentStreamError} [error]  When failed.
 */

/** An error with the shape the page needs for its banner. */
export class AgentStreamError extends Error {
  /**
   * @param {string} message
   * @param {object} [info]
   * @param {string} [info.type]        e.g. 'http_error', 'network_error', 'stream_cut', or the gateway's error type.
   * @param {number} [info.status]      HTTP status, if any.
   * @param {boolean} [info.retryable]  Whether starting a new stream may help.
   * @param {number} [info.retryAfterMs]
   */
  constructor(message, { type = 'error', status, retryable = true, retryAfterMs } = {}) {
    super(message);
    this.name = 'AgentStreamError';
    this.type = type;
    this.status = status;
    this.retryable = retryable;
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * Split an event id `<stream_id>:<seq>` into its parts.
 * @param {string} id
 * @returns {{streamId: string, seq: number}}  seq is -1 when the id carries none.
 */
export function parseEventId(id) {
  const i = id.lastIndexOf(':');
  if (i <= 0) return { streamId: id, seq: -1 };
  const seq = Number(id.slice(i + 1));
  return Number.isInteger(seq) ? { streamId: id.slice(0, i), seq } : { streamId: id, seq: -1 };
}

const defaultSleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });

// Reasons we abort our own fetch with; anything else is a network error.
const STOP = 'agent-client:stop';
const DROP = 'agent-client:drop';
const STALL = 'agent-client:stall';

/**
 * One agent stream: start it, watch its events, stop it, survive cuts.
 *
 * @example
 * const stream = new AgentStream({
 *   baseUrl: '', apiKey, body: { prompt: 'Hello', thinking: true },
 *   onEvent: (ev) => { if (ev.type === 'token') out.append(ev.data.text); },
 *   onStatus: (st) => console.log(st.state),
 * });
 * const result = await stream.start();   // {outcome: 'done'|'stopped'|'failed', ...}
 * // elsewhere: stream.stop();
 */
export class AgentStream {
  /**
   * @param {object} options
   * @param {object} options.body  Request body for POST /v1/agent/stream ({prompt, model?, max_turns?, thinking?, tools?} or {messages}).
   * @param {string} [options.baseUrl='']  Gateway origin ('' = same origin).
   * @param {string} [options.apiKey]      Sent as `x-api-key` when set.
   * @param {Record<string,string>} [options.headers]  Extra request headers (e.g. traceparent).
   * @param {(event: AgentEvent) => void} [options.onEvent]
   * @param {(status: AgentStatus) => void} [options.onStatus]
   * @param {AbortSignal} [options.signal]  Aborting it is the same as calling stop().
   * @param {typeof fetch} [options.fetch]  fetch implementation (tests inject a fake).
   * @param {(ms: number, signal?: AbortSignal) => Promise<void>} [options.sleep]  Abortable sleep (tests inject one).
   * @param {number[]} [options.backoffMs=[1000,2000,4000]]  Reconnect delays; its length is the max tries in a row.
   * @param {number} [options.idleTimeoutMs=45000]  No bytes for this long (keepalives count) = stalled; 0 disables.
   */
  constructor({
    body,
    baseUrl = '',
    apiKey,
    headers = {},
    onEvent = () => {},
    onStatus = () => {},
    signal,
    fetch: fetchImpl = globalThis.fetch?.bind(globalThis),
    sleep = defaultSleep,
    backoffMs = DEFAULT_BACKOFF_MS,
    idleTimeoutMs = 45000,
  }) {
    this.body = body;
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.apiKey = apiKey;
    this.extraHeaders = headers;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.fetch = fetchImpl;
    this.sleep = sleep;
    this.backoffMs = [...backoffMs];
    this.idleTimeoutMs = idleTimeoutMs;
    /** @type {string|null} */
    this.streamId = null;
    /** The id of the last event delivered; sent as Last-Event-ID on resume. */
    this.lastEventId = '';
    /** The seq of the last event delivered (-1 before any). */
    this.lastSeq = -1;
    /** True once `stream_end` arrived. */
    this.ended = false;
    /** Number of successful resumes. */
    this.reconnects = 0;
    this.stopped = false;
    this._attempt = null; // AbortController of the fetch in flight
    this._sleepCtl = null;
    this._cancelPromise = null;
    this._promise = null;
    if (signal) {
      if (signal.aborted) this.stopped = true;
      else signal.addEventListener('abort', () => this.stop(), { once: true });
    }
  }

  /**
   * Start the stream (idempotent) and resolve when it finishes.
   * Never rejects for stream problems: failures resolve with outcome 'failed' and an error.
   * @returns {Promise<AgentResult>}
   */
  start() {
    this._promise ??= this._run();
    return this._promise;
  }

  /**
   * Stop the stream: POST …/cancel (so the gateway stops the upstream call) and abort the fetch.
   * Safe to call at any time, more than once.
   * @returns {Promise<boolean>} Whether the gateway acknowledged the cancel (false if no stream id yet or it failed).
   */
  stop() {
    if (!this.stopped) {
      this.stopped = true;
      if (this.streamId && !this.ended) this._cancelPromise = this._sendCancel(this.streamId);
      this._attempt?.abort(STOP);
      this._sleepCtl?.abort(STOP);
    }
    return this._cancelPromise ?? Promise.resolve(false);
  }

  /**
   * Debug/test hook: drop the current connection WITHOUT cancelling the stream, as a network
   * cut would. The client then resumes with Last-Event-ID.
   * @returns {boolean} Whether a connection was open.
   */
  dropConnection() {
    if (!this._attempt || this.stopped) return false;
    this._attempt.abort(DROP);
    return true;
  }

  _headers(extra = {}) {
    const h = { accept: 'text/event-stream', ...this.extraHeaders, ...extra };
    if (this.apiKey) h['x-api-key'] = this.apiKey;
    return h;
  }

  async _sendCancel(streamId) {
    try {
      const res = await this.fetch(`${this.baseUrl}/v1/agent/stream/${encodeURIComponent(streamId)}/cancel`, {
        method: 'POST',
        headers: this._headers({ 'content-type': 'application/json' }),
        body: '{}',
        keepalive: true,
      });
      return res.ok;
    } catch {
      return false;
    }
  }

  _result(outcome, error) {
    const state = outcome;
    this.onStatus(error ? { state, error } : { state });
    const r = { outcome, streamId: this.streamId, lastEventId: this.lastEventId, reconnects: this.reconnects };
    if (error) r.error = error;
    return r;
  }

  async _run() {
    if (this.stopped) return this._result('stopped');
    this.onStatus({ state: 'connecting' });
    let outcome = await this._connect('POST');
    let tries = 0;
    while (true) {
      if (this.stopped) return this._result('stopped');
      if (outcome.kind === 'done') return this._result('done');
      if (outcome.kind === 'fatal') return this._result('failed', outcome.error);
      // 'retry': the connection broke. Resume if we can.
      if (outcome.progressed) tries = 0;
      if (!this.streamId) {
        return this._result(
          'failed',
          new AgentStreamError('The connection was lost before the stream started.', {
            type: 'network_error',
            retryable: true,
          }),
        );
      }
      if (tries >= this.backoffMs.length) {
        return this._result(
          'failed',
          new AgentStreamError(`Connection lost; ${tries} reconnect attempts failed.`, {
            type: outcome.reason === 'cut' ? 'stream_cut' : 'network_error',
            retryable: true,
          }),
        );
      }
      const delayMs = this.backoffMs[tries];
      tries += 1;
      this.onStatus({
        state: 'reconnecting',
        attempt: tries,
        maxAttempts: this.backoffMs.length,
        delayMs,
        reason: outcome.reason,
      });
      this._sleepCtl = new AbortController();
      try {
        await this.sleep(delayMs, this._sleepCtl.signal);
      } catch {
        // aborted by stop()
      }
      this._sleepCtl = null;
      if (this.stopped) return this._result('stopped');
      outcome = await this._connect('GET');
      if (outcome.progressed || outcome.kind === 'done') this.reconnects += 1;
    }
  }

  /**
   * One HTTP attempt. Resolves to {kind: 'done'|'retry'|'fatal', progressed, reason?, error?}.
   */
  async _connect(method) {
    const ctl = new AbortController();
    this._attempt = ctl;
    let progressed = false;
    let idleTimer = null;
    const armIdle = () => {
      if (!this.idleTimeoutMs) return;
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => ctl.abort(STALL), this.idleTimeoutMs);
    };
    try {
      let res;
      if (method === 'POST') {
        res = await this.fetch(`${this.baseUrl}/v1/agent/stream`, {
          method: 'POST',
          headers: this._headers({ 'content-type': 'application/json' }),
          body: JSON.stringify(this.body),
          signal: ctl.signal,
        });
      } else {
        res = await this.fetch(`${this.baseUrl}/v1/agent/stream/${encodeURIComponent(this.streamId)}`, {
          method: 'GET',
          headers: this._headers({ 'last-event-id': this.lastEventId }),
          signal: ctl.signal,
        });
      }
      const bad = await this._checkResponse(res, method);
      if (bad) return bad;
      this.onStatus({ state: 'streaming' });
      armIdle();
      const parser = new SSEParser({
        lastEventId: this.lastEventId,
        onEvent: (ev) => {
          if (this._deliver(ev)) progressed = true;
        },
      });
      const reader = res.body.getReader();
      try {
        while (true) {
          const { value, done } = await reader.read();
          if (done) break;
          armIdle();
          parser.feed(value);
          if (this.ended) break;
        }
      } finally {
        clearTimeout(idleTimer);
        reader.cancel().catch(() => {});
      }
      if (this.ended) return { kind: 'done', progressed };
      parser.end(); // an unterminated final event is discarded; either way this body was cut
      return { kind: 'retry', progressed, reason: 'cut' };
    } catch (err) {
      clearTimeout(idleTimer);
      if (this.ended) return { kind: 'done', progressed };
      const reason = ctl.signal.aborted ? ctl.signal.reason : null;
      if (reason === STOP || this.stopped) return { kind: 'stopped', progressed };
      return { kind: 'retry', progressed, reason: reason === STALL ? 'stall' : 'network', error: err };
    } finally {
      if (this._attempt === ctl) this._attempt = null;
    }
  }

  /** Returns null when the response is a usable event stream, else an outcome. */
  async _checkResponse(res, method) {
    const ctype = res.headers?.get?.('content-type') ?? '';
    if (res.status === 200 && ctype.toLowerCase().startsWith('text/event-stream')) return null;
    let message = `HTTP ${res.status}`;
    let type = 'http_error';
    let retryAfterMs;
    try {
      const text = await res.text();
      const j = JSON.parse(text);
      const e = j.error ?? j;
      if (e.message) message = String(e.message);
      if (e.type) type = String(e.type);
    } catch {
      // not JSON; keep the status line
    }
    const ra = Number(res.headers?.get?.('retry-after'));
    if (Number.isFinite(ra) && ra > 0) retryAfterMs = ra * 1000;
    if (res.status === 200 || res.status === 204) {
      message = res.status === 204 ? 'The stream is no longer available.' : `Unexpected content type: ${ctype || 'none'}`;
      type = res.status === 204 ? 'stream_gone' : 'bad_content_type';
    }
    // A resume answered with a server error may succeed on the next try; anything else is final.
    if (method === 'GET' && res.status >= 500) return { kind: 'retry', progressed: false, reason: 'http' };
    const retryable = res.status === 429 || res.status >= 500 || method === 'GET';
    return {
      kind: 'fatal',
      progressed: false,
      error: new AgentStreamError(message, { type, status: res.status, retryable, retryAfterMs }),
    };
  }

  /** Deliver one parsed SSE event; returns true if it was new (not a duplicate). */
  _deliver(ev) {
    const id = ev.lastEventId;
    const { streamId, seq } = parseEventId(id);
    if (seq >= 0) {
      if (seq <= this.lastSeq) return false; // replayed duplicate
      this.lastSeq = seq;
    }
    this.lastEventId = id;
    let data = ev.data;
    try {
      data = JSON.parse(ev.data);
    } catch {
      // keep raw
    }
    if (ev.type === 'start') this.streamId = data?.stream_id ?? streamId;
    else if (!this.streamId && seq >= 0) this.streamId = streamId;
    if (ev.type === 'stream_end') this.ended = true;
    try {
      this.onEvent({ type: ev.type, data, id, seq });
    } catch (err) {
      // a bug in the page's handler must not look like a network cut
      queueMicrotask(() => {
        throw err;
      });
    }
    return true;
  }
}

/**
 * Convenience: create and start an {@link AgentStream}.
 * @param {ConstructorParameters<typeof AgentStream>[0]} options
 * @returns {{stream: AgentStream, done: Promise<AgentResult>, stop: () => Promise<boolean>}}
 */
export function streamAgent(options) {
  const stream = new AgentStream(options);
  return { stream, done: stream.start(), stop: () => stream.stop() };
}
