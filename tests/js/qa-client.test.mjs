// Tests for qa-client.js under node's test runner: node --test tests/js/
// The recorded stream is real output of the service (demo provider, unicode
// scenario); the expected text was extracted from it independently, in Python.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { SSEParser, startAnswer, streamAnswer } from "../../src/qa_service/static/qa-client.js";
import { withFetch } from "./support/fetch.mjs";

const recorded = readFileSync(new URL("./fixtures/unicode-stream.sse", import.meta.url));
const expected = JSON.parse(
  readFileSync(new URL("./fixtures/unicode-stream.expected.json", import.meta.url), "utf8"),
);
const encoder = new TextEncoder();

function parse(chunks) {
  const events = [];
  const parser = new SSEParser((event) => events.push(event));
  for (const chunk of chunks) parser.feed(chunk);
  parser.end();
  return events;
}

const textOf = (events) =>
  events.map((e) => JSON.parse(e.data)).filter((p) => "text" in p).map((p) => p.text).join("");

const whole = parse([recorded]);

test("the recorded stream parses to the expected text and events", () => {
  assert.equal(whole.length, expected.events);
  assert.equal(textOf(whole), expected.text);
  assert.ok(whole.every((e) => e.type === "message"));
  assert.equal(whole[0].id, "fixture-unicode-0001:0");
  assert.equal(whole.at(-1).id, `fixture-unicode-0001:${expected.events - 1}`);
  assert.ok(expected.last in JSON.parse(whole.at(-1).data));
});

test("every split point of the recorded bytes gives the same events", () => {
  for (let cut = 0; cut <= recorded.length; cut++) {
    const events = parse([recorded.subarray(0, cut), recorded.subarray(cut)]);
    assert.deepEqual(events, whole, `split at byte ${cut}`);
  }
});

test("byte-by-byte feeding, splitting every UTF-8 character, gives the same events", () => {
  const chunks = Array.from({ length: recorded.length }, (_, i) => recorded.subarray(i, i + 1));
  assert.deepEqual(parse(chunks), whole);
});

test("random multi-way splits give the same events", () => {
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let run = 0; run < 300; run++) {
    const chunks = [];
    for (let at = 0; at < recorded.length; ) {
      const size = 1 + Math.floor(random() * 40);
      chunks.push(recorded.subarray(at, at + size));
      at += size;
    }
    assert.deepEqual(parse(chunks), whole, `run ${run}`);
  }
});

for (const [name, ending] of [
  ["CRLF", "\r\n"],
  ["CR", "\r"],
]) {
  test(`${name} line endings, split at every point, give the same events`, () => {
    const converted = encoder.encode(new TextDecoder().decode(recorded).replaceAll("\n", ending));
    for (let cut = 0; cut <= converted.length; cut += 1) {
      const events = parse([converted.subarray(0, cut), converted.subarray(cut)]);
      assert.deepEqual(events, whole, `split at byte ${cut}`);
    }
  });
}

test("a CRLF split between chunks ends one line, not two", () => {
  const events = parse([encoder.encode("data: a\r"), encoder.encode("\ndata: b\r\n\r\n")]);
  assert.deepEqual(events.map((e) => e.data), ["a\nb"]);
});

test("comments, lone keep-alives and empty blocks dispatch nothing", () => {
  const stream = "id: r:0\ndata: {\"text\":\"x\"}\n\n: keep-alive\n: keep-alive\n\n\nid: r:1\ndata: {\"text\":\"y\"}\n\n";
  const events = parse([encoder.encode(stream)]);
  assert.deepEqual(events.map((e) => e.data), ['{"text":"x"}', '{"text":"y"}']);
  assert.deepEqual(events.map((e) => e.id), ["r:0", "r:1"]);
});

test("field rules: no space after colon, multi-line data, event names, BOM, bad retry", () => {
  const stream = "\uFEFFdata:one\ndata: two\nevent: custom\nretry: x\ndata\n\n";
  const events = parse([encoder.encode(stream)]);
  assert.deepEqual(events, [{ type: "custom", data: "one\ntwo\n", id: "" }]);
});

test("an event without its blank line at the end of the stream is discarded", () => {
  assert.deepEqual(parse([encoder.encode("data: complete\n\ndata: cut")]).length, 1);
});

// streamAnswer, with fetch answering from bytes in chunks.
function fakeFetch(chunks, { status = 200, onCancel } = {}) {
  return async () => {
    const body = new ReadableStream({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
        if (!onCancel) controller.close();
      },
      cancel: onCancel,
    });
    return new Response(body, { status, headers: { "content-type": "text/event-stream" } });
  };
}

test("streamAnswer reports meta, text and done, and stops reading at done", async () => {
  let cancelled = false;
  const seen = [];
  const stream = [
    'id: r:0\ndata: {"meta":{"provider":"demo"}}\n\n',
    'id: r:1\ndata: {"text":"Hel',
    'lo"}\n\nid: r:2\ndata: {"text":" <b>"}\n\n',
    'id: r:3\ndata: {"done":{"finish_reason":"stop","chars":9}}\n\n',
  ];
  const result = await withFetch(fakeFetch(stream, { onCancel: () => (cancelled = true) }), () =>
    streamAnswer("q", {
      onMeta: (meta) => seen.push(["meta", meta.provider]),
      onText: (piece) => seen.push(["text", piece]),
      onDone: (done, text) => seen.push(["done", done.finish_reason, text]),
      onError: () => assert.fail("no error expected"),
    }),
  );
  assert.equal(result.status, "done");
  assert.equal(result.text, "Hello <b>");
  assert.deepEqual(seen, [
    ["meta", "demo"],
    ["text", "Hello"],
    ["text", " <b>"],
    ["done", "stop", "Hello <b>"],
  ]);
  // The stream was never closed by the server here: the client let go itself.
  assert.equal(cancelled, true);
});

test("streamAnswer passes on an error event with what arrived before it", async () => {
  const stream = [
    'data: {"meta":{}}\n\ndata: {"text":"part"}\n\n',
    'data: {"error":{"code":"upstream_interrupted","message":"cut","retryable":true}}\n\n',
  ];
  let reported;
  const result = await withFetch(fakeFetch(stream), () =>
    streamAnswer("q", { onError: (error, text) => (reported = [error.code, text]) }),
  );
  assert.equal(result.status, "error");
  assert.deepEqual(reported, ["upstream_interrupted", "part"]);
});

test("streamAnswer calls a stream that ends without done or error a cut", async () => {
  const result = await withFetch(fakeFetch(['data: {"text":"half"}\n\n']), () =>
    streamAnswer("q"),
  );
  assert.equal(result.status, "error");
  assert.equal(result.error.code, "stream_cut");
  assert.equal(result.error.retryable, true);
  assert.equal(result.text, "half");
});

test("streamAnswer passes on a JSON refusal, with the request id to quote", async () => {
  const refusal = async () =>
    new Response(
      JSON.stringify({ error: { code: "query_required", message: "m", retryable: false } }),
      { status: 422, headers: { "content-type": "application/json", "x-request-id": "rid12345" } },
    );
  let quoted;
  const result = await withFetch(refusal, () =>
    streamAnswer(" ", { onError: (_error, _text, requestId) => (quoted = requestId) }),
  );
  assert.equal(result.status, "error");
  assert.equal(result.error.code, "query_required");
  assert.equal(result.requestId, "rid12345");
  assert.equal(quoted, "rid12345");
});

test("streamAnswer reports the meta event's request id with an error event", async () => {
  const stream = [
    'data: {"meta":{"request_id":"fromMeta1"}}\n\n',
    'data: {"error":{"code":"upstream_error","message":"m","retryable":true}}\n\n',
  ];
  let quoted;
  const result = await withFetch(fakeFetch(stream), () =>
    streamAnswer("q", { onError: (_error, _text, requestId) => (quoted = requestId) }),
  );
  assert.equal(quoted, "fromMeta1");
  assert.equal(result.requestId, "fromMeta1");
});

test("streamAnswer resolves as aborted, without onError, when its signal aborts", async () => {
  const controller = new AbortController();
  const never = async (_url, init) =>
    new Promise((_, reject) =>
      init.signal.addEventListener("abort", () =>
        reject(new DOMException("aborted", "AbortError")),
      ),
    );
  const pending = withFetch(never, () =>
    streamAnswer("q", { signal: controller.signal, onError: () => assert.fail("no error") }),
  );
  controller.abort();
  assert.equal((await pending).status, "aborted");
});

test("history goes in the POST body after the question, and only when there is some", async () => {
  const history = [
    { role: "user", content: "What is a tide?" },
    { role: "assistant", content: "The sea's **rise** and fall." },
  ];
  const bodies = [];
  const answer = fakeFetch(['data: {"meta":{}}\n\ndata: {"done":{}}\n\n']);
  const recording = async (url, init) => {
    bodies.push(JSON.parse(init.body));
    return answer(url, init);
  };
  await withFetch(recording, async () => {
    await streamAnswer("And why?", { history, prompt: "concise" });
    await streamAnswer("Alone", { history: [] });
    await streamAnswer("Alone");
  });
  assert.deepEqual(bodies, [
    { query: "And why?", prompt: "concise", history },
    { query: "Alone" },
    { query: "Alone" },
  ]);
});

test("history with a stream ticket is refused at once: its GET has no body", () => {
  const history = [{ role: "user", content: "a" }, { role: "assistant", content: "b" }];
  assert.throws(() => startAnswer("q", { history, getTicket: async () => "t" }), TypeError);
});
