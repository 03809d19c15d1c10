// Pure helpers of the trace waterfall and the tool timeline (no DOM needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { pickTrace, orderSpans, summarize, eventOffset } from '../lib/waterfall.js';
import { formatMs } from '../lib/timeline.js';

const span = (span_id, parent_id, name, start_ms, duration_ms, extra = {}) => ({
  span_id, parent_id, name, kind: 'INTERNAL', start_ms, duration_ms, status: 'OK', attributes: {}, events: [], ...extra,
});

test('pickTrace prefers the matching trace id, else the most recent', () => {
  const traces = [
    { trace_id: 'a', start_unix_ms: 1 },
    { trace_id: 'b', start_unix_ms: 3 },
    { trace_id: 'c', start_unix_ms: 2 },
  ];
  assert.deepEqual(pickTrace(traces, 'c'), { trace: traces[2], matched: true });
  assert.deepEqual(pickTrace(traces, 'zzz'), { trace: traces[1], matched: false });
  assert.deepEqual(pickTrace([], 'a'), { trace: null, matched: false });
  assert.deepEqual(pickTrace(undefined), { trace: null, matched: false });
});

test('orderSpans nests children under parents, by start time; orphans become roots', () => {
  const spans = [
    span('t', 'root', 'execute_tool x', 50, 10),
    span('c2', 'root', 'chat m', 70, 20),
    span('root', null, 'POST /v1/agent/stream', 0, 100),
    span('c1', 'root', 'chat m', 5, 40),
    span('o', 'missing', 'orphan', 1, 1),
  ];
  assert.deepEqual(orderSpans(spans).map(({ span: s, depth }) => [s.span_id, depth]), [
    ['root', 0], ['c1', 1], ['t', 1], ['c2', 1], ['o', 0],
  ]);
});

test('eventOffset: trace-relative times, span-relative when before the span start', () => {
  const s = span('c', null, 'chat', 100, 50);
  assert.equal(eventOffset(s, { t_ms: 120 }), 120);
  assert.equal(eventOffset(s, { t_ms: 20 }), 120);
});

test('summarize: TTFT from the earliest first-token event, tools and tokens', () => {
  const trace = {
    spans: [
      span('root', null, 'POST /v1/agent/stream', 0, 900, { kind: 'SERVER', events: [{ name: 'first_token', t_ms: 400 }] }),
      span('c1', 'root', 'chat claude', 5, 300, {
        kind: 'CLIENT',
        attributes: { 'gen_ai.usage.input_tokens': 100, 'gen_ai.usage.output_tokens': 20 },
        events: [{ name: 'first_token', t_ms: 350 }, { name: 'tool_use', t_ms: 200 }],
      }),
      span('t', 'root', 'execute_tool search_database', 310, 120, { attributes: { 'gen_ai.tool.name': 'search_database' } }),
      span('c2', 'root', 'chat claude', 440, 400, {
        kind: 'CLIENT', attributes: { 'gen_ai.usage.input_tokens': 300, 'gen_ai.usage.output_tokens': 50 },
      }),
    ],
  };
  assert.deepEqual(summarize(trace), {
    ttftMs: 350,
    tools: [{ name: 'search_database', ms: 120 }],
    inputTokens: 400,
    outputTokens: 70,
  });
});

test('formatMs', () => {
  assert.equal(formatMs(12.4), '12 ms');
  assert.equal(formatMs(1234), '1.23 s');
  assert.equal(formatMs(12345), '12.3 s');
  assert.equal(formatMs(null), '–');
});
