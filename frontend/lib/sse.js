// WHATWG-conformant Server-Sent Events parser (HTML §9.2.5 "Parsing an event stream" and
// §9.2.6 "Interpreting an event stream"), for fetch()-based clients.
//
// Pure: no DOM, no network. Feed it byte chunks (Uint8Array) or already-decoded strings in
// any split; it emits the same events as a browser's EventSource would:
//   * UTF-8 decoded with ONE streaming TextDecoder, so a multi-byte character split across
//     chunks is never turned into U+FFFD;
//   * one leading U+FEFF (BOM) is stripped once, at the start of the stream only;
//   * lines end with CRLF, LF or CR — including a CR at the end of one chunk followed by
//     the LF at the start of the next (counted as ONE line end);
//   * lines starting with ":" are comments (reported to `onComment`, e.g. keepalives);
//   * `data` lines are joined with "\n"; one leading space after the colon is removed;
//   * `id` without data updates lastEventId; an `id` containing U+0000 is ignored;
//   * `retry` is honoured only if it is ASCII digits;
//   * an event is dispatched on a blank line; at end of stream an unterminated event is
//     NOT dispatched (per spec), but `end()` reports it so a client can treat the stream
//     as cut.

/**
 * A dispatched server-sent event.
 * @typedef {object} SSEEvent
 * @property {string} type         Event type (`event:` field), "message" when absent or empty.
 * @property {string} data         The data lines joined with "\n".
 * @property {string} lastEventId  The stream's last event ID at dispatch time.
 */

/**
 * What `end()` reports about the stream's tail.
 * @typedef {object} SSEEndResult
 * @property {boolean} incomplete  True if the stream ended in the middle of an event
 *   (an unterminated line, or fields seen after the last blank line). That event was discarded.
 * @property {string} pendingData   Data buffered for the discarded event ("" if none).
 * @property {string} pendingLine   Text of an unterminated last line ("" if none).
 */

const LF = 0x0a;
const CR = 0x0d;
const BOM = '\uFEFF';
const DIGITS = /^[0-9]+$/;

/**
 * Incremental SSE parser. One instance per HTTP response body.
 *
 * @example
 * const parser = new SSEParser({ onEvent: (ev) => console.log(ev.type, ev.data) });
 * for await (const chunk of response.body) parser.feed(chunk);
 * const { incomplete } = parser.end();
 */
export class SSEParser {
  /**
   * @param {object} [options]
   * @param {(event: SSEEvent) => void} [options.onEvent]    Called for every dispatched event.
   * @param {(comment: string) => void} [options.onComment]  Called with each comment's text (after ":").
   * @param {(ms: number) => void} [options.onRetry]         Called when a valid `retry:` field arrives.
   * @param {string} [options.lastEventId]  Initial last event ID (e.g. the one a resume was sent with).
   */
  constructor({ onEvent, onComment, onRetry, lastEventId = '' } = {}) {
    this.onEvent = onEvent ?? (() => {});
    this.onComment = onComment ?? (() => {});
    this.onRetry = onRetry ?? (() => {});
    /** The last event ID string as of the last dispatch (what `Last-Event-ID` should carry). */
    this.lastEventId = lastEventId;
    /** Reconnection time in ms from the last valid `retry:` field, or null. */
    this.retry = null;
    this._decoder = new TextDecoder('utf-8', { ignoreBOM: true });
    this._started = false; // BOM check done?
    this._skipLF = false; // previous chunk ended with CR: swallow one leading LF
    this._line = ''; // unterminated text carried over between chunks
    this._data = '';
    this._type = '';
    this._idBuffer = lastEventId;
    this._dirty = false; // any field seen since the last dispatch
    this._ended = false;
  }

  /**
   * Feed the next chunk of the body.
   * @param {Uint8Array|ArrayBuffer|string} chunk  Bytes (decoded as UTF-8, streaming) or text.
   * @returns {void}
   */
  feed(chunk) {
    if (this._ended) throw new Error('SSEParser: feed() after end()');
    let text;
    if (typeof chunk === 'string') text = chunk;
    else if (chunk instanceof ArrayBuffer) text = this._decoder.decode(new Uint8Array(chunk), { stream: true });
    else text = this._decoder.decode(chunk, { stream: true });
    this._text(text);
  }

  /**
   * Signal the end of the body. Flushes the decoder and discards an unterminated final
   * event (as the spec requires), reporting whether there was one.
   * @returns {SSEEndResult}
   */
  end() {
    if (!this._ended) {
      this._text(this._decoder.decode()); // flush: an incomplete UTF-8 sequence becomes U+FFFD
      this._ended = true;
    }
    const result = {
      incomplete: this._line.length > 0 || this._dirty,
      pendingData: this._data,
      pendingLine: this._line,
    };
    this._line = '';
    this._data = '';
    this._type = '';
    this._dirty = false;
    return result;
  }

  /** Alias of {@link SSEParser#end}. @returns {SSEEndResult} */
  flush() {
    return this.end();
  }

  _text(text) {
    if (!text) return;
    if (!this._started) {
      this._started = true;
      if (text.startsWith(BOM)) text = text.slice(1);
      if (!text) return;
    }
    let start = 0;
    if (this._skipLF) {
      this._skipLF = false;
      if (text.charCodeAt(0) === LF) start = 1;
    }
    const n = text.length;
    for (let i = start; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c !== LF && c !== CR) continue;
      const piece = text.slice(start, i);
      const line = this._line ? this._line + piece : piece;
      this._line = '';
      if (c === CR) {
        if (i + 1 < n) {
          if (text.charCodeAt(i + 1) === LF) i++;
        } else {
          this._skipLF = true; // the LF may arrive in the next chunk
        }
      }
      start = i + 1;
      this._processLine(line);
    }
    if (start < n) this._line += text.slice(start);
  }

  _processLine(line) {
    if (line === '') {
      this._dispatch();
      return;
    }
    if (line.charCodeAt(0) === 0x3a /* : */) {
      this.onComment(line.slice(1));
      return;
    }
    const colon = line.indexOf(':');
    let field;
    let value;
    if (colon === -1) {
      field = line;
      value = '';
    } else {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    }
    this._dirty = true;
    switch (field) {
      case 'event':
        this._type = value;
        break;
      case 'data':
        this._data += value + '\n';
        break;
      case 'id':
        if (!value.includes('\0')) this._idBuffer = value;
        break;
      case 'retry':
        if (DIGITS.test(value)) {
          this.retry = parseInt(value, 10);
          this.onRetry(this.retry);
        }
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  _dispatch() {
    this._dirty = false;
    this.lastEventId = this._idBuffer;
    if (this._data === '') {
      this._type = '';
      return;
    }
    const data = this._data.endsWith('\n') ? this._data.slice(0, -1) : this._data;
    const type = this._type || 'message';
    this._data = '';
    this._type = '';
    this.onEvent({ type, data, lastEventId: this.lastEventId });
  }
}

/**
 * Parse a complete SSE body in one go (handy for tests and replays).
 * @param {string|Uint8Array|Array<string|Uint8Array>} input  The body, or its chunks in order.
 * @returns {{events: SSEEvent[], lastEventId: string, retry: number|null, comments: string[], incomplete: boolean}}
 */
export function parseSSE(input) {
  const events = [];
  const comments = [];
  const parser = new SSEParser({ onEvent: (e) => events.push(e), onComment: (c) => comments.push(c) });
  const chunks = Array.isArray(input) ? input : [input];
  for (const chunk of chunks) parser.feed(chunk);
  const { incomplete } = parser.end();
  return { events, lastEventId: parser.lastEventId, retry: parser.retry, comments, incomplete };
}
