// Tests of the reusable agent client with a fake fetch that returns real ReadableStreams.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { AgentStream, streamAgent, parseEventId, DEFAULT_BACKOFF_MS } from '../lib/agent-client.js';

const enc = new TextEncoder();

/** Encode one contract event the way the gateway does. */
function ev(streamId, seq, type, data) {
  return `id: ${streamId}:${seq}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** The full event list of a simple stream "s1": start, tokens "Hello", " wor", "ld", done, stream_end. */
function fullStream(id = 's1') {
  return [
    ev(id, 0, 'start', { stream_id: id, model: 'claude-x', trace_id: 't1' }),
    ev(id, 1, 'token', { text: 'Hello' }),
    ': keepalive\n\n',
    ev(id, 2, 'token', { text: ' wor' }),
    ev(id, 3, 'token', { text: 'ld' }),
    ev(id, 4, 'done', { stop_reason: 'end_turn', ttft_ms: 10, duration_ms: 50, usage: {} }),
    ev(id, 5, 'stream_end', {}),
  ];
}

/**
 * A streaming body: enqueues `chunks`, then closes (`end: 'close'`), errors (`'error'`) or
 * stays open until the request is aborted (`'hang'`).
 */
function sseResponse(chunks, { signal, end = 'close', status = 200, headers = {} } = {}) {
  const queue = [...chunks];
  let hang = null;
  const body = new ReadableStream({
    pull(c) {
      if (queue.length) {
        const ch = queue.shift();
        c.enqueue(typeof ch === 'string' ? enc.encode(ch) : ch);
      } else if (end === 'close') c.close();
      else if (end === 'error') c.error(new TypeError('network error'));
      else if (!hang) {
        // stay open until the request is aborted
        hang = new Promise((resolve) => {
          const fail = () => {
            c.error(signal.reason);
            resolve();
          };
          if (signal?.aborted) fail();
          else signal?.addEventListener('abort', fail);
        });
        return hang;
      }
      return undefined;
    },
  });
  return new Response(body, { status, headers: { 'content-type': 'text/event-stream', ...headers } });
}

/** A fake fetch: `handlers` is a list of functions (url, init) => Response|Promise, used in order per call. */
function fakeFetch(handlers) {
  const calls = [];
  const fn = async (url, init = {}) => {
    const call = { url, method: init.method ?? 'GET', headers: { ...(init.headers ?? {}) }, body: init.body };
    calls.push(call);
    if (url.endsWith('/cancel')) return new Response('{}', { status: 202, headers: { 'content-type': 'application/json' } });
    const h = handlers.shift();
    if (!h) throw new TypeError('no more fake responses');
    return h(url, init);
  };
  fn.calls = calls;
  return fn;
}

const noSleep = () => {
  const delays = [];
  const sleep = async (ms) => {
    delays.push(ms);
  };
  sleep.delays = delays;
  return sleep;
};

function collect() {
  const events = [];
  const statuses = [];
  return {
    events,
    statuses,
    onEvent: (e) => events.push(e),
    onStatus: (s) => statuses.push(s),
    text: () => events.filter((e) => e.type === 'token').map((e) => e.data.text).join(''),
  };
}

describe('parseEventId', () => {
  test('splits on the last colon', () => {
    assert.deepEqual(parseEventId('s1:7'), { streamId: 's1', seq: 7 });
    assert.deepEqual(parseEventId('a:b:12'), { streamId: 'a:b', seq: 12 });
    assert.deepEqual(parseEventId('nope'), { streamId: 'nope', seq: -1 });
    assert.deepEqual(parseEventId('s:x'), { streamId: 's:x', seq: -1 });
  });
});

describe('happy path', () => {
  test('POSTs the body with x-api-key and delivers parsed events in order', async () => {
    const c = collect();
    const fetch = fakeFetch([(url, init) => sseResponse(fullStream(), { signal: init.signal })]);
    const s = new AgentStream({ baseUrl: 'http://gw/', apiKey: 'k-1', body: { prompt: 'hi' }, fetch, ...c });
    const r = await s.start();
    assert.equal(r.outcome, 'done');
    assert.equal(r.streamId, 's1');
    assert.equal(c.text(), 'Hello world');
    assert.deepEqual(c.events.map((e) => e.type), ['start', 'token', 'token', 'token', 'done', 'stream_end']);
    assert.deepEqual(c.events.map((e) => e.seq), [0, 1, 2, 3, 4, 5]);
    assert.equal(fetch.calls[0].url, 'http://gw/v1/agent/stream');
    assert.equal(fetch.calls[0].method, 'POST');
    assert.equal(fetch.calls[0].headers['x-api-key'], 'k-1');
    assert.deepEqual(JSON.parse(fetch.calls[0].body), { prompt: 'hi' });
    assert.deepEqual(c.statuses.map((x) => x.state), ['connecting', 'streaming', 'done']);
  });

  test('no x-api-key header without a key; streamAgent helper works', async () => {
    const c = collect();
    const fetch = fakeFetch([(url, init) => sseResponse(fullStream(), { signal: init.signal })]);
    const { done } = streamAgent({ body: { prompt: 'x' }, fetch, ...c });
    assert.equal((await done).outcome, 'done');
    assert.equal(fetch.calls[0].url, '/v1/agent/stream');
    assert.equal('x-api-key' in fetch.calls[0].headers, false);
  });

  test('CRLF framing split at odd places still yields the whole text', async () => {
    const c = collect();
    const bytes = enc.encode(fullStream().join('').replaceAll('\n', '\r\n'));
    const chunks = [];
    for (let i = 0; i < bytes.length; i += 7) chunks.push(bytes.subarray(i, i + 7));
    const fetch = fakeFetch([(url, init) => sseResponse(chunks, { signal: init.signal })]);
    const r = await new AgentStream({ body: {}, fetch, ...c }).start();
    assert.equal(r.outcome, 'done');
    assert.equal(c.text(), 'Hello world');
  });
});

describe('cut detection and resume', () => {
  test('a body that ends without stream_end is cut: resumes with Last-Event-ID and de-duplicates', async () => {
    const c = collect();
    const all = fullStream();
    const sleep = noSleep();
    const fetch = fakeFetch([
      // first connection: start + "Hello" + half of the next event, then a clean close
      (url, init) => sseResponse([all[0], all[1], all[2], 'id: s1:2\nevent: tok'], { signal: init.signal }),
      // resume replays from seq 1 (one duplicate), then the rest
      (url, init) => sseResponse([all[1], ...all.slice(3 - 1)], { signal: init.signal }),
    ]);
    const r = await new AgentStream({ body: { prompt: 'p' }, fetch, sleep, ...c }).start();
    assert.equal(r.outcome, 'done');
    assert.equal(r.reconnects, 1);
    assert.equal(c.text(), 'Hello world');
    assert.deepEqual(c.events.map((e) => e.seq), [0, 1, 2, 3, 4, 5]);
    const resume = fetch.calls[1];
    assert.equal(resume.method, 'GET');
    assert.equal(resume.url, '/v1/agent/stream/s1');
    assert.equal(resume.headers['last-event-id'], 's1:1');
    assert.deepEqual(sleep.delays, [1000]);
    const rec = c.statuses.find((s) => s.state === 'reconnecting');
    assert.equal(rec.reason, 'cut');
    assert.equal(rec.attempt, 1);
  });

  test('a network error mid-stream resumes; a replay of everything is de-duplicated', async () => {
    const c = collect();
    const all = fullStream();
    const fetch = fakeFetch([
      (url, init) => sseResponse(all.slice(0, 3), { signal: init.signal, end: 'error' }),
      (url, init) => sseResponse(all, { signal: init.signal }), // server replays from the very start
    ]);
    const r = await new AgentStream({ body: {}, fetch, sleep: noSleep(), ...c }).start();
    assert.equal(r.outcome, 'done');
    assert.equal(c.text(), 'Hello world');
    assert.equal(c.events.filter((e) => e.type === 'start').length, 1);
    assert.equal(fetch.calls[1].headers['last-event-id'], 's1:1');
  });

  test('backoff is 1 s, 2 s, 4 s, then failure with a retryable error', async () => {
    const c = collect();
    const all = fullStream();
    const sleep = noSleep();
    const fetch = fakeFetch([
      (url, init) => sseResponse(all.slice(0, 2), { signal: init.signal, end: 'error' }),
      async () => {
        throw new TypeError('Failed to fetch');
      },
      (url, init) => sseResponse([], { signal: init.signal, status: 503, headers: { 'content-type': 'application/json' } }),
      async () => {
        throw new TypeError('Failed to fetch');
      },
    ]);
    const r = await new AgentStream({ body: {}, fetch, sleep, ...c }).start();
    assert.deepEqual(sleep.delays, [1000, 2000, 4000]);
    assert.deepEqual(DEFAULT_BACKOFF_MS, [1000, 2000, 4000]);
    assert.equal(r.outcome, 'failed');
    assert.equal(r.error.retryable, true);
    assert.equal(fetch.calls.length, 4);
    assert.deepEqual(
      c.statuses.filter((s) => s.state === 'reconnecting').map((s) => [s.attempt, s.delayMs]),
      [[1, 1000], [2, 2000], [3, 4000]],
    );
    assert.equal(c.statuses.at(-1).state, 'failed');
    assert.equal(c.text(), 'Hello');
  });

  test('a resume that makes progress resets the try count', async () => {
    const c = collect();
    const all = fullStream();
    const sleep = noSleep();
    const fetch = fakeFetch([
      (url, init) => sseResponse(all.slice(0, 2), { signal: init.signal, end: 'error' }),
      async () => {
        throw new TypeError('down');
      },
      (url, init) => sseResponse(all.slice(2, 4), { signal: init.signal, end: 'error' }), // progress, then cut again
      (url, init) => sseResponse(all.slice(4), { signal: init.signal }),
    ]);
    const r = await new AgentStream({ body: {}, fetch, sleep, ...c }).start();
    assert.equal(r.outcome, 'done');
    assert.deepEqual(sleep.delays, [1000, 2000, 1000]);
    assert.equal(c.text(), 'Hello world');
  });

  test('a resume answered 404 fails without more tries', async () => {
    const c = collect();
    const all = fullStream();
    const sleep = noSleep();
    const fetch = fakeFetch([
      (url, init) => sseResponse(all.slice(0, 2), { signal: init.signal }),
      () =>
        new Response(JSON.stringify({ type: 'error', error: { type: 'not_found_error', message: 'no such stream' } }), {
          status: 404,
          headers: { 'content-type': 'application/json' },
        }),
    ]);
    const r = await new AgentStream({ body: {}, fetch, sleep, ...c }).start();
    assert.equal(r.outcome, 'failed');
    assert.equal(r.error.status, 404);
    assert.equal(r.error.type, 'not_found_error');
    assert.equal(r.error.message, 'no such stream');
    assert.deepEqual(sleep.delays, [1000]);
  });

  test('a cut before the start event cannot resume and fails', async () => {
    const c = collect();
    const fetch = fakeFetch([(url, init) => sseResponse([': keepalive\n\n'], { signal: init.signal })]);
    const r = await new AgentStream({ body: {}, fetch, sleep: noSleep(), ...c }).start();
    assert.equal(r.outcome, 'failed');
    assert.equal(r.error.type, 'network_error');
    assert.equal(fetch.calls.length, 1);
  });

  test('a stalled connection (no bytes, no keepalives) is treated as cut', async () => {
    const c = collect();
    const all = fullStream();
    const fetch = fakeFetch([
      (url, init) => sseResponse(all.slice(0, 2), { signal: init.signal, end: 'hang' }),
      (url, init) => sseResponse(all.slice(2), { signal: init.signal }),
    ]);
    const r = await new AgentStream({ body: {}, fetch, sleep: noSleep(), idleTimeoutMs: 30, ...c }).start();
    assert.equal(r.outcome, 'done');
    assert.equal(c.statuses.find((s) => s.state === 'reconnecting').reason, 'stall');
    assert.equal(c.text(), 'Hello world');
  });

  test('dropConnection() aborts without cancel and the client resumes', async () => {
    const c = collect();
    const all = fullStream();
    let stream;
    const fetch = fakeFetch([
      (url, init) => {
        setTimeout(() => assert.equal(stream.dropConnection(), true), 5);
        return sseResponse(all.slice(0, 3), { signal: init.signal, end: 'hang' });
      },
      (url, init) => sseResponse(all.slice(1), { signal: init.signal }),
    ]);
    stream = new AgentStream({ body: {}, fetch, sleep: noSleep(), ...c });
    const r = await stream.start();
    assert.equal(r.outcome, 'done');
    assert.equal(c.text(), 'Hello world');
    assert.equal(fetch.calls.some((x) => x.url.endsWith('/cancel')), false);
    assert.equal(fetch.calls[1].headers['last-event-id'], 's1:1');
  });
});

describe('errors before streaming', () => {
  test('HTTP 429 on the POST fails with a retryable error and retry-after', async () => {
    const c = collect();
    const fetch = fakeFetch([
      () =>
        new Response(JSON.stringify({ type: 'error', error: { type: 'rate_limit_error', message: 'slow down' } }), {
          status: 429,
          headers: { 'content-type': 'application/json', 'retry-after': '3' },
        }),
    ]);
    const r = await new AgentStream({ body: {}, fetch, sleep: noSleep(), ...c }).start();
    assert.equal(r.outcome, 'failed');
    assert.equal(r.error.retryable, true);
    assert.equal(r.error.retryAfterMs, 3000);
    assert.equal(r.error.type, 'rate_limit_error');
    assert.equal(fetch.calls.length, 1, 'a POST is never retried automatically');
  });

  test('HTTP 400 is not retryable', async () => {
    const fetch = fakeFetch([() => new Response('{"error":{"message":"bad"}}', { status: 400 })]);
    const r = await new AgentStream({ body: {}, fetch }).start();
    assert.equal(r.error.retryable, false);
    assert.equal(r.error.message, 'bad');
  });

  test('wrong content type fails the connection', async () => {
    const fetch = fakeFetch([() => new Response('<html>', { status: 200, headers: { 'content-type': 'text/html' } })]);
    const r = await new AgentStream({ body: {}, fetch }).start();
    assert.equal(r.outcome, 'failed');
    assert.equal(r.error.type, 'bad_content_type');
  });

  test('in-stream error events are delivered as events', async () => {
    const c = collect();
    const fetch = fakeFetch([
      (url, init) =>
        sseResponse(
          [
            ev('s2', 0, 'start', { stream_id: 's2', model: 'm', trace_id: 't' }),
            ev('s2', 1, 'error', { type: 'overloaded_error', message: 'Overloaded', retryable: true, retry_after_ms: 1000 }),
            ev('s2', 2, 'stream_end', {}),
          ],
          { signal: init.signal },
        ),
    ]);
    const r = await new AgentStream({ body: {}, fetch, ...c }).start();
    assert.equal(r.outcome, 'done');
    assert.equal(c.events[1].data.retryable, true);
  });
});

describe('stop', () => {
  test('stop() aborts the fetch AND POSTs cancel for the stream', async () => {
    const c = collect();
    const all = fullStream();
    let stream;
    const fetch = fakeFetch([
      (url, init) => {
        setTimeout(() => stream.stop(), 5);
        return sseResponse(all.slice(0, 2), { signal: init.signal, end: 'hang' });
      },
    ]);
    stream = new AgentStream({ baseUrl: 'http://gw', apiKey: 'k', body: {}, fetch, sleep: noSleep(), ...c });
    const r = await stream.start();
    assert.equal(r.outcome, 'stopped');
    const cancel = fetch.calls.find((x) => x.url.endsWith('/cancel'));
    assert.ok(cancel, 'cancel was POSTed');
    assert.equal(cancel.url, 'http://gw/v1/agent/stream/s1/cancel');
    assert.equal(cancel.method, 'POST');
    assert.equal(cancel.headers['x-api-key'], 'k');
    assert.equal(await stream.stop(), true, 'stop() resolves to whether the cancel was acknowledged');
    assert.equal(fetch.calls.filter((x) => x.url.endsWith('/cancel')).length, 1, 'cancel sent once');
    assert.equal(c.statuses.at(-1).state, 'stopped');
    assert.equal(c.text(), 'Hello');
  });

  test('stop() during the backoff wait ends at once without reconnecting', async () => {
    const all = fullStream();
    let stream;
    const sleep = (ms, signal) =>
      new Promise((resolve, reject) => {
        signal.addEventListener('abort', () => reject(signal.reason));
        setTimeout(() => stream.stop(), 1);
      });
    const fetch = fakeFetch([(url, init) => sseResponse(all.slice(0, 2), { signal: init.signal })]);
    stream = new AgentStream({ body: {}, fetch, sleep });
    const r = await stream.start();
    assert.equal(r.outcome, 'stopped');
    assert.deepEqual(fetch.calls.map((x) => x.method), ['POST', 'POST']); // the stream + its cancel
    assert.ok(fetch.calls[1].url.endsWith('/v1/agent/stream/s1/cancel'));
  });

  test('an external AbortSignal stops the stream', async () => {
    const all = fullStream();
    const ac = new AbortController();
    const fetch = fakeFetch([
      (url, init) => {
        setTimeout(() => ac.abort(), 5);
        return sseResponse(all.slice(0, 2), { signal: init.signal, end: 'hang' });
      },
    ]);
    const r = await new AgentStream({ body: {}, fetch, signal: ac.signal }).start();
    assert.equal(r.outcome, 'stopped');
    assert.ok(fetch.calls.some((x) => x.url.endsWith('/s1/cancel')));
  });

  test('stop() after stream_end sends no cancel', async () => {
    const fetch = fakeFetch([(url, init) => sseResponse(fullStream(), { signal: init.signal })]);
    const s = new AgentStream({ body: {}, fetch });
    await s.start();
    assert.equal(await s.stop(), false);
    assert.equal(fetch.calls.length, 1);
  });
});
