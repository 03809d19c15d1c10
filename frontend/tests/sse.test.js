// Unit tests of the SSE parser against WHATWG HTML §9.2.5/§9.2.6 and the WPT eventsource
// format-* vectors (see reference/sse-proxies-reliability-security.md §2.2).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { SSEParser, parseSSE } from '../lib/sse.js';

const enc = new TextEncoder();
const datas = (input) => parseSSE(input).events.map((e) => e.data);

/** Feed `text` as bytes split at every offset pair; all splits must give the same events. */
function assertSplitInvariant(text, expected) {
  const bytes = enc.encode(text);
  const whole = parseSSE(bytes);
  assert.deepEqual(whole.events, expected);
  for (let i = 0; i <= bytes.length; i++) {
    const r = parseSSE([bytes.subarray(0, i), bytes.subarray(i)]);
    assert.deepEqual(r.events, expected, `split at byte ${i}`);
  }
  // one byte at a time
  const single = [];
  for (let i = 0; i < bytes.length; i++) single.push(bytes.subarray(i, i + 1));
  assert.deepEqual(parseSSE(single).events, expected, 'byte by byte');
}

describe('basic fields', () => {
  test('data with and without a space after the colon', () => {
    assert.deepEqual(datas('data:test\n\n'), ['test']);
    assert.deepEqual(datas('data: test\n\n'), ['test']);
  });

  test('only one leading space is stripped', () => {
    assert.deepEqual(datas('data:  2\n\n'), [' 2']);
  });

  test('tab kept, CR terminates, empty data value appends a line', () => {
    assert.deepEqual(datas('data:\ttest\rdata: \ndata:test\n\n'), ['\ttest\n\ntest']);
  });

  test('multi-line data joined with LF, one trailing LF removed', () => {
    assert.deepEqual(datas('data: a\ndata:\ndata: b\n\n'), ['a\n\nb']);
    assert.deepEqual(datas('data: line1\ndata: line2\ndata: line3\n\n'), ['line1\nline2\nline3']);
  });

  test('bare "data" is an empty value', () => {
    assert.deepEqual(datas('data:\n\ndata\ndata\n\ndata:test\n\n'), ['', '\n', 'test']);
  });

  test('only the first colon splits field and value', () => {
    assert.deepEqual(datas('data: a:b\n\n'), ['a:b']);
    assert.deepEqual(datas('data:{"k":"v: w"}\n\n'), ['{"k":"v: w"}']);
  });

  test('unknown fields and lines without colon are ignored', () => {
    assert.deepEqual(
      datas('data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test\n\n'),
      ['test\n\ntest'],
    );
  });

  test('field names are exact (case, NUL, leading space, punctuation)', () => {
    const input =
      'data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n data:32\ndata:4\n\n';
    assert.deepEqual(datas(input), ['\0\n 2\n1\n3\n\n4']);
  });

  test('NUL in data is kept', () => {
    assert.deepEqual(datas('data:\0\n\n'), ['\0']);
  });
});

describe('event type', () => {
  test('event field sets the type; empty or absent gives "message"; resets after dispatch', () => {
    const { events } = parseSSE('event:test\ndata:x\n\ndata:x\n\nevent: \ndata:y\n\n');
    assert.deepEqual(events.map((e) => e.type), ['test', 'message', 'message']);
  });

  test('empty data buffer fires nothing (event only)', () => {
    assert.deepEqual(parseSSE('event: foo\n\n').events, []);
  });

  test('type buffer is cleared even when nothing is dispatched', () => {
    const { events } = parseSSE('event: foo\n\ndata: x\n\n');
    assert.equal(events[0].type, 'message');
  });
});

describe('id / lastEventId', () => {
  test('id without data updates lastEventId but fires nothing', () => {
    const r = parseSSE('id: 5\n\n');
    assert.deepEqual(r.events, []);
    assert.equal(r.lastEventId, '5');
  });

  test('id persists across events and resets with an empty id', () => {
    const r = parseSSE('id: 1\ndata: 1\n\ndata: 2\n\nid: 2\ndata:3\n\ndata:4\n\n');
    assert.deepEqual(r.events.map((e) => e.lastEventId), ['1', '1', '2', '2']);
    assert.equal(parseSSE('id: 1\ndata: a\n\nid:\ndata: b\n\n').events[1].lastEventId, '');
    assert.equal(parseSSE('id: 1\ndata: a\n\nid\ndata: b\n\n').events[1].lastEventId, '');
  });

  test('id containing NUL anywhere is ignored', () => {
    for (const bad of ['\0\0', 'x\0', '\0x', 'x\0x']) {
      const r = parseSSE(`id:${bad}\ndata:a\n\n`);
      assert.equal(r.events[0].lastEventId, '', JSON.stringify(bad));
      assert.equal(r.lastEventId, '');
    }
    assert.equal(parseSSE('id: ok\ndata:a\n\nid: b\0\ndata:b\n\n').events[1].lastEventId, 'ok');
  });

  test('gateway-style ids "<stream_id>:<seq>" keep their colon', () => {
    const r = parseSSE('id: st_01H:7\nevent: token\ndata: {"text":"hi"}\n\n');
    assert.deepEqual(r.events, [{ type: 'token', data: '{"text":"hi"}', lastEventId: 'st_01H:7' }]);
  });

  test('initial lastEventId can be given (resume)', () => {
    const p = new SSEParser({ lastEventId: 's:3' });
    const seen = [];
    p.onEvent = (e) => seen.push(e.lastEventId);
    p.feed('data: x\n\n');
    assert.deepEqual(seen, ['s:3']);
  });
});

describe('retry', () => {
  test('digits only, leading zeros allowed, bogus and empty ignored', () => {
    assert.equal(parseSSE('retry:03000\ndata:x\n\n').retry, 3000);
    assert.equal(parseSSE('retry:3000\nretry:1000x\ndata:x\n\n').retry, 3000);
    assert.equal(parseSSE('retry\ndata:x\n\n').retry, null);
    assert.equal(parseSSE('retry: 12\n\n').retry, 12);
    assert.equal(parseSSE('retry:-1\n\n').retry, null);
    assert.equal(parseSSE('retry:1.5\n\n').retry, null);
  });

  test('onRetry callback', () => {
    const seen = [];
    const p = new SSEParser({ onRetry: (ms) => seen.push(ms) });
    p.feed('retry: 250\n\n');
    assert.deepEqual(seen, [250]);
  });
});

describe('comments', () => {
  test('comments anywhere, including NUL, long ones and ":data:fail"', () => {
    const long = 'x'.repeat(2048);
    const input = `data:1\r:\0\n:\r\ndata:2\n:${long}\rdata:3\n:data:fail\r:${long}\ndata:4\n\n`;
    assert.deepEqual(datas(input), ['1\n2\n3\n4']);
  });

  test('keepalive comments are reported and fire no event', () => {
    const r = parseSSE(': keepalive\n\n: keepalive\n\ndata: x\n\n');
    assert.deepEqual(r.comments, [' keepalive', ' keepalive']);
    assert.deepEqual(r.events.map((e) => e.data), ['x']);
  });
});

describe('line endings', () => {
  test('mixed CRLF, LF, CR', () => {
    assert.deepEqual(datas('data:test\r\ndata\ndata:test\r\n\r\n'), ['test\n\ntest']);
    assert.deepEqual(datas('data:a\r\rdata:b\r\r'), ['a', 'b']);
  });

  test('CRLF split across chunks is one line end, not two', () => {
    assert.deepEqual(datas(['data: a\r', '\ndata: b\r\n\r\n']), ['a\nb']);
    assert.deepEqual(datas(['data: a\r\n\r', '\ndata: b\r\n\r\n']), ['a', 'b']);
    assert.deepEqual(datas(['data: a\r', '\n', '\r', '\n']), ['a']);
  });

  test('CR at chunk end followed by a non-LF char still ends the line', () => {
    assert.deepEqual(datas(['data: a\r', 'data: b\r\r']), ['a\nb']);
  });

  test('CRLF-framed stream split at every byte gives the same events', () => {
    const text = 'id: s:1\r\nevent: token\r\ndata: {"text":"a"}\r\n\r\n: keepalive\r\n\r\nid: s:2\r\nevent: token\r\ndata: {"text":"b"}\r\n\r\n';
    assertSplitInvariant(text, [
      { type: 'token', data: '{"text":"a"}', lastEventId: 's:1' },
      { type: 'token', data: '{"text":"b"}', lastEventId: 's:2' },
    ]);
  });

  test('Unicode line separators are data, not line ends', () => {
    const seps = '\u2028\u2029\u0085\v\f\x1c\x1d\x1e';
    assert.deepEqual(datas(`data: a${seps}b\n\n`), [`a${seps}b`]);
  });
});

describe('UTF-8', () => {
  test('multi-byte characters split across chunks are not replaced', () => {
    const text = 'data: héllo 日本語 🎉 ok\n\n';
    const bytes = enc.encode(text);
    for (let i = 1; i < bytes.length; i++) {
      const r = parseSSE([bytes.subarray(0, i), bytes.subarray(i)]);
      assert.deepEqual(r.events.map((e) => e.data), ['héllo 日本語 🎉 ok'], `split at ${i}`);
    }
    assertSplitInvariant(text, [{ type: 'message', data: 'héllo 日本語 🎉 ok', lastEventId: '' }]);
  });

  test('a 4-byte emoji fed one byte per chunk', () => {
    const bytes = enc.encode('data: 🎉\n\n');
    const chunks = Array.from(bytes, (b) => Uint8Array.of(b));
    assert.deepEqual(datas(chunks), ['🎉']);
  });

  test('ArrayBuffer chunks are accepted', () => {
    const bytes = enc.encode('data: x\n\n');
    assert.deepEqual(datas([bytes.buffer]), ['x']);
  });

  test('invalid UTF-8 becomes U+FFFD (decoder is not fatal)', () => {
    assert.deepEqual(datas([Uint8Array.of(0x64, 0x61, 0x74, 0x61, 0x3a, 0xff, 0x0a, 0x0a)]), ['\uFFFD']);
  });
});

describe('BOM', () => {
  test('only the first leading BOM is stripped', () => {
    assert.deepEqual(datas('\uFEFFdata:1\n\n\uFEFFdata:2\n\ndata:3\n\n'), ['1', '3']);
  });

  test('double BOM at start: the second makes an unknown field', () => {
    assert.deepEqual(datas('\uFEFF\uFEFFdata:1\n\ndata:2\n\ndata:3\n\n'), ['2', '3']);
  });

  test('BOM bytes split across chunks', () => {
    const bytes = enc.encode('\uFEFFdata: x\n\n');
    assert.deepEqual(datas([bytes.subarray(0, 1), bytes.subarray(1, 2), bytes.subarray(2)]), ['x']);
  });

  test('BOM arriving as its own string chunk is stripped once', () => {
    assert.deepEqual(datas(['\uFEFF', 'data: x\n\n']), ['x']);
    assert.deepEqual(datas(['', '\uFEFF', '\uFEFFdata: x\n\ndata: y\n\n']), ['y']);
  });
});

describe('end of stream', () => {
  test('a final event without its blank line is not dispatched, and end() reports it', () => {
    const r = parseSSE('retry:1000\ndata:test1\n\nid:test\ndata:test2');
    assert.deepEqual(r.events.map((e) => e.data), ['test1']);
    assert.equal(r.lastEventId, '');
    assert.equal(r.incomplete, true);
  });

  test('event terminated by one line end but not the blank line is incomplete', () => {
    const p = new SSEParser();
    const seen = [];
    p.onEvent = (e) => seen.push(e);
    p.feed('data: a\n\nevent: stream_end\ndata: {}\n');
    const end = p.end();
    assert.equal(seen.length, 1);
    assert.equal(end.incomplete, true);
    assert.equal(end.pendingData, '{}\n');
  });

  test('a cleanly terminated stream is complete', () => {
    assert.equal(parseSSE('data: a\n\n').incomplete, false);
    assert.equal(parseSSE('data: a\n\n: keepalive\n').incomplete, false);
    assert.equal(parseSSE('').incomplete, false);
  });

  test('an unterminated comment line counts as incomplete (the body was cut mid-line)', () => {
    assert.equal(parseSSE('data: a\n\n: keep').incomplete, true);
  });

  test('feed after end throws; end is idempotent', () => {
    const p = new SSEParser();
    p.feed('data: a');
    assert.equal(p.end().incomplete, true);
    assert.equal(p.flush().incomplete, false);
    assert.throws(() => p.feed('x'));
  });

  test('end() flushes a dangling partial UTF-8 sequence', () => {
    const r = parseSSE([enc.encode('data: a\n\ndata: '), Uint8Array.of(0xe6, 0x97)]);
    assert.equal(r.incomplete, true);
    assert.deepEqual(r.events.map((e) => e.data), ['a']);
  });
});

describe('property: any chunking of a recorded gateway stream', () => {
  const recorded =
    '\uFEFF: keepalive\n\n' +
    'id: s1:0\nevent: start\ndata: {"stream_id":"s1","model":"m","trace_id":"t"}\n\n' +
    'id: s1:1\r\nevent: token\r\ndata: {"text":"Hé\u2028llo 🌍"}\r\n\r\n' +
    'id: s1:2\revent: thinking\rdata: {"text":"a"}\r\r' +
    ': keepalive\n\n' +
    'id: s1:3\nevent: stream_end\ndata: {}\n\n';
  const expected = parseSSE(recorded).events;

  test('reference parse is right', () => {
    assert.deepEqual(expected.map((e) => [e.type, e.lastEventId]), [
      ['start', 's1:0'], ['token', 's1:1'], ['thinking', 's1:2'], ['stream_end', 's1:3'],
    ]);
    assert.equal(JSON.parse(expected[1].data).text, 'Hé\u2028llo 🌍');
  });

  test('every single split point and every byte-by-byte feed agree', () => {
    assertSplitInvariant(recorded, expected);
  });

  test('random chunkings (seeded) agree', () => {
    const bytes = enc.encode(recorded);
    let seed = 42;
    const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    for (let round = 0; round < 300; round++) {
      const chunks = [];
      let i = 0;
      while (i < bytes.length) {
        const n = 1 + Math.floor(rand() * 12);
        chunks.push(bytes.subarray(i, i + n));
        i += n;
      }
      assert.deepEqual(parseSSE(chunks).events, expected, `round ${round}`);
    }
  });
});
