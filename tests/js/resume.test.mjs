// qa-client.js resuming after network drops, and cancelling, against a real
// HTTP server on 127.0.0.1 that speaks the issue-7 protocol
// (/work/notes/issue7-design.md, docs/PROTOCOL.md): POST /ai_write starts an
// answer, GET /answers/{id}/events replays after Last-Event-ID, 204 once
// everything was delivered, 404 answer_not_found, POST /answers/{id}/cancel.
// Each connection can be cut after a scripted number of events.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";

import { cancelAnswer, startAnswer, streamAnswer } from "../../src/qa_service/static/qa-client.js";

const ANSWER_ID = "AbCdEfGhIjKlMnOpQrSt-_"; // 22 base64url characters
const TEXTS = ["Photo", "synthesis\n", " is 糖 🌱", " <b>light</b>", "\r\n", " and 👩‍🔬", " water."];
const DONE = { finish_reason: "stop", chars: TEXTS.join("").length };
const TEST = { timeout: 15_000 }; // every test has a deadline
const FAST = { retryDelayMs: 5, maxRetryDelayMs: 20 }; // backoff for tests

// Rejects if `promise` takes longer than `ms`: no wait in these tests is open-ended.
function within(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

async function until(condition, ms, what) {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function frame(seq, payload, { id = true } = {}) {
  const idLine = id ? `id: ${ANSWER_ID}:${seq}\n` : "";
  const retry = seq === 0 ? "retry: 1000\n" : "";
  return `${idLine}${retry}data: ${JSON.stringify(payload)}\n\n`;
}

/**
 * A server for one answer. `cuts[k]` is how many events connection k sends
 * before its socket is destroyed (connection 0 is POST /ai_write, then each
 * resume); past the list, a connection sends everything and ends normally.
 * `hold: true` keeps a connection open after its events instead of ending it.
 * `raw` replaces what connection 0 sends; `resume(request, response, seen)`
 * may answer a resume itself (and returns true when it did).
 */
async function startService({
  texts = TEXTS,
  end = { done: DONE },
  cuts = [],
  hold = false,
  overlap = 0,
  resume,
  raw,
} = {}) {
  const events = [
    { meta: { request_id: "req1", provider: "demo", model: "m", answer_id: ANSWER_ID } },
    ...texts.map((text) => ({ text })),
    end,
  ];
  const seen = { requests: [], cancels: [], connections: 0 };
  const sockets = new Set();

  async function stream(response, after) {
    const k = seen.connections++;
    const limit = cuts[k] ?? Infinity;
    response.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "x-request-id": `req${k + 1}`,
    });
    // A misbehaving replay repeats `overlap` events the client has already had.
    const from = Math.max(0, after + 1 - (k > 0 ? overlap : 0));
    const batch = events.slice(from).slice(0, limit);
    const bytes = k === 0 && raw !== undefined ? raw : batch.map((payload, i) => frame(from + i, payload)).join("");
    if (limit !== Infinity && from + limit < events.length) {
      // Cut: the bytes reach the kernel, then the connection dies before the end.
      response.write(bytes || ":\n", () => response.socket.destroy());
    } else if (hold) {
      response.write(bytes || ":\n");
    } else {
      response.end(bytes);
    }
  }

  const server = createServer(async (request, response) => {
    let body = "";
    for await (const chunk of request) body += chunk;
    const lastEventId = request.headers["last-event-id"] ?? null;
    seen.requests.push({ method: request.method, url: request.url, lastEventId, body });
    const cancel = /^\/answers\/([^/]+)\/cancel$/.exec(request.url);
    const replay = /^\/answers\/([^/]+)\/events$/.exec(request.url);
    if (request.method === "POST" && request.url === "/ai_write") {
      await stream(response, -1);
    } else if (request.method === "POST" && cancel) {
      seen.cancels.push(decodeURIComponent(cancel[1]));
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ answer_id: cancel[1], status: "cancelled" }));
    } else if (request.method === "GET" && replay) {
      if (resume?.(request, response, seen)) return;
      if (decodeURIComponent(replay[1]) !== ANSWER_ID) {
        response.writeHead(404, { "content-type": "application/json" });
        response.end(JSON.stringify({ error: { code: "answer_not_found", message: "m", retryable: false } }));
        return;
      }
      const after = lastEventId ? Number(lastEventId.split(":")[1]) : -1;
      if (after >= events.length - 1) {
        response.writeHead(204).end();
        return;
      }
      await stream(response, after);
    } else {
      response.writeHead(404).end();
    }
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const baseUrl = `http://127.0.0.1:${server.address().port}`;
  return {
    baseUrl,
    seen,
    resumes: () => seen.requests.filter((r) => r.url.endsWith("/events")),
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

async function withService(options, run) {
  const service = await startService(options);
  try {
    return await run(service);
  } finally {
    await service.close();
  }
}

// Asks with every callback recorded.
function ask(service, options = {}) {
  const calls = { texts: [], metas: [], errors: [], dones: [], reconnects: [] };
  const handle = startAnswer("q", {
    baseUrl: service.baseUrl,
    ...FAST,
    onMeta: (meta) => calls.metas.push(meta),
    onText: (piece) => calls.texts.push(piece),
    onDone: (done) => calls.dones.push(done),
    onError: (error) => calls.errors.push(error),
    onReconnect: (info) => calls.reconnects.push(info),
    ...options,
  });
  return { handle, calls, result: within(handle.result, 10_000, "the answer to settle") };
}

test("one drop mid-answer: it resumes after the last event it saw, and the text is exact", TEST, async () => {
  await withService({ cuts: [3] }, async (service) => {
    const { calls, result } = ask(service);
    const outcome = await result;
    assert.equal(outcome.status, "done");
    assert.equal(outcome.text, TEXTS.join(""));
    assert.deepEqual(calls.texts, TEXTS); // each piece once, in order
    assert.deepEqual(calls.dones, [DONE]);
    assert.deepEqual(calls.errors, []);
    assert.equal(calls.metas.length, 1);
    assert.equal(outcome.answerId, ANSWER_ID);
    assert.equal(outcome.requestId, "req1");
    assert.equal(outcome.reconnects, 1);
    assert.deepEqual(
      service.seen.requests.map((r) => [r.method, r.url, r.lastEventId]),
      [
        ["POST", "/ai_write", null],
        ["GET", `/answers/${ANSWER_ID}/events`, `${ANSWER_ID}:2`],
      ],
    );
    assert.deepEqual(service.seen.cancels, []);
  });
});

test("several drops, one right after meta and one with nothing new: text exact, no piece twice", TEST, async () => {
  // Connection 0 sends meta only; then 2, 0, 1, 3 events; the last sends the rest.
  await withService({ cuts: [1, 2, 0, 1, 3] }, async (service) => {
    const { calls, result } = ask(service);
    const outcome = await result;
    assert.equal(outcome.status, "done");
    assert.deepEqual(calls.texts, TEXTS);
    assert.equal(outcome.text, TEXTS.join(""));
    assert.equal(outcome.reconnects, 5);
    assert.deepEqual(
      service.resumes().map((r) => r.lastEventId),
      [0, 2, 2, 3, 6].map((seq) => `${ANSWER_ID}:${seq}`),
    );
  });
});

test("events replayed again by the server are skipped by their seq", TEST, async () => {
  // Each resume repeats the 2 events before the Last-Event-ID it was given.
  await withService({ cuts: [4, 3], overlap: 2 }, async (service) => {
    const { calls, result } = ask(service);
    const outcome = await result;
    assert.equal(outcome.status, "done");
    assert.deepEqual(calls.texts, TEXTS);
    assert.equal(calls.metas.length, 1);
  });
});

test("a server that always cuts: error after `retries` reconnects with doubling delays", TEST, async () => {
  await withService({ cuts: [3, 0, 0, 0, 0, 0, 0, 0, 0, 0] }, async (service) => {
    const started = Date.now();
    const { calls, result } = ask(service, { retries: 4, retryDelayMs: 10, maxRetryDelayMs: 40 });
    const outcome = await result;
    assert.equal(outcome.status, "error");
    assert.equal(outcome.error.code, "stream_cut");
    assert.equal(outcome.text, TEXTS.slice(0, 2).join(""));
    assert.equal(service.resumes().length, 4);
    assert.deepEqual(calls.reconnects.map((r) => r.delayMs), [10, 20, 40, 40]);
    assert.deepEqual(calls.reconnects.map((r) => r.attempt), [1, 2, 3, 4]);
    assert.equal(calls.errors.length, 1);
    assert.ok(Date.now() - started < 5_000);
  });
});

test("the default backoff: 5 reconnects, 250 ms doubling, capped at 2 s", { timeout: 15_000 }, async () => {
  await withService({ cuts: [2, 0, 0, 0, 0, 0, 0, 0] }, async (service) => {
    const started = Date.now();
    const { calls, result } = ask(service, { retryDelayMs: undefined, maxRetryDelayMs: undefined });
    const outcome = await within(result, 12_000, "the default retries to run out");
    assert.equal(outcome.error.code, "stream_cut");
    assert.deepEqual(calls.reconnects.map((r) => r.delayMs), [250, 500, 1000, 2000, 2000]);
    assert.equal(service.resumes().length, 5);
    assert.ok(Date.now() - started >= 5_750);
  });
});

test("a server that is gone: network_error after the retries, at the same bound", TEST, async () => {
  await withService(
    { cuts: [2], resume: (request) => (request.socket.destroy(), true) },
    async (service) => {
      const { result } = ask(service, { retries: 3 });
      const outcome = await result;
      assert.equal(outcome.status, "error");
      assert.equal(outcome.error.code, "network_error");
      assert.equal(service.resumes().length, 3);
    },
  );
});

test("a reconnect that brings new events starts the count again", TEST, async () => {
  // Seven cuts in a row, but each brings one new event: with retries 2 it finishes.
  await withService({ cuts: [1, 1, 1, 1, 1, 1, 1, 1] }, async (service) => {
    const { calls, result } = ask(service, { retries: 2 });
    const outcome = await result;
    assert.equal(outcome.status, "done");
    assert.deepEqual(calls.texts, TEXTS);
  });
});

test("a 5xx on a resume is retried; the answer still ends exact", TEST, async () => {
  let failures = 2;
  const resume = (_request, response) => {
    if (failures-- <= 0) return false;
    response.writeHead(503, { "content-type": "application/json" });
    response.end(JSON.stringify({ error: { code: "store_unavailable", message: "m", retryable: true } }));
    return true;
  };
  await withService({ cuts: [4], resume }, async (service) => {
    const { calls, result } = ask(service);
    assert.equal((await result).status, "done");
    assert.deepEqual(calls.texts, TEXTS);
    assert.equal(service.resumes().length, 3);
  });
});

test("204 on a resume without a terminal event seen: an error, not a silent finish", TEST, async () => {
  // The cut falls right before done, and the resume is answered 204 as if the
  // client had had everything (a server bug, or a log that lost its tail).
  const resume = (_request, response) => (response.writeHead(204).end(), true);
  await withService({ cuts: [1 + TEXTS.length], resume }, async (service) => {
    const { calls, result } = ask(service);
    const outcome = await result;
    assert.equal(outcome.status, "error");
    assert.equal(outcome.error.code, "resume_incomplete");
    assert.equal(outcome.text, TEXTS.join(""));
    assert.deepEqual(calls.dones, []);
    assert.equal(calls.errors.length, 1);
    assert.equal(service.resumes().length, 1); // 204 is final: no retry
  });
});

test("the done event is never lost at a cut right before it", TEST, async () => {
  await withService({ cuts: [1 + TEXTS.length] }, async (service) => {
    const { calls, result } = ask(service);
    assert.equal((await result).status, "done");
    assert.deepEqual(calls.dones, [DONE]);
    assert.equal(service.resumes()[0].lastEventId, `${ANSWER_ID}:${TEXTS.length}`);
  });
});

for (const [status, code] of [
  [404, "answer_not_found"],
  [409, "resume_mismatch"],
  [400, "invalid_last_event_id"],
]) {
  test(`${status} ${code} on a resume: that error, and no retry`, TEST, async () => {
    const resume = (_request, response) => {
      response.writeHead(status, { "content-type": "application/json" });
      response.end(JSON.stringify({ error: { code, message: "m", retryable: false } }));
      return true;
    };
    await withService({ cuts: [3], resume }, async (service) => {
      const { calls, result } = ask(service);
      const outcome = await result;
      assert.equal(outcome.status, "error");
      assert.equal(outcome.error.code, code);
      assert.deepEqual(calls.errors.map((e) => e.code), [code]);
      assert.equal(service.resumes().length, 1);
    });
  });
}

test("a drop before meta: nothing to resume, reported as a cut", TEST, async () => {
  await withService({ cuts: [0] }, async (service) => {
    const { result } = ask(service);
    const outcome = await result;
    assert.equal(outcome.error.code, "stream_cut");
    assert.equal(service.resumes().length, 0);
  });
});

test("a service that cannot be reached: network_error, no resume", TEST, async () => {
  const service = await startService();
  await service.close(); // the port is now closed
  const { result } = ask(service);
  const outcome = await result;
  assert.equal(outcome.error.code, "network_error");
  assert.equal(outcome.answerId, "");
});

test("a malformed event is a protocol error, not a network cut, and is not resumed", TEST, async () => {
  const raw = frame(0, { meta: { answer_id: ANSWER_ID } }) + frame(1, { text: "ok" }) +
    `id: ${ANSWER_ID}:2\ndata: {"text": "broken\n\n` + frame(3, { text: "never" });
  await withService({ raw, hold: true }, async (service) => {
    const { calls, result } = ask(service);
    const outcome = await result;
    assert.equal(outcome.status, "error");
    assert.equal(outcome.error.code, "protocol_error");
    assert.equal(outcome.error.retryable, false);
    assert.equal(outcome.text, "ok");
    assert.deepEqual(calls.texts, ["ok"]);
    assert.equal(service.resumes().length, 0);
  });
});

test("an event of another answer is a protocol error", TEST, async () => {
  const raw = frame(0, { meta: { answer_id: ANSWER_ID } }) +
    `id: SomeOtherAnswerIdxxxxx:1\ndata: {"text":"x"}\n\n`;
  await withService({ raw, hold: true }, async (service) => {
    const { result } = ask(service);
    assert.equal((await result).error.code, "protocol_error");
  });
});

test("an error event without an id ends that connection only: the answer is resumed", TEST, async () => {
  // A replica that stops while relaying sends shutting_down without an id line:
  // the answer goes on elsewhere, and Last-Event-ID still names the last text.
  const relayStop = { error: { code: "shutting_down", message: "m", retryable: true } };
  const raw = frame(0, { meta: { answer_id: ANSWER_ID } }) + frame(1, { text: TEXTS[0] }) +
    frame(99, relayStop, { id: false });
  await withService({ raw }, async (service) => {
    const { calls, result } = ask(service);
    const outcome = await result;
    assert.equal(outcome.status, "done");
    assert.deepEqual(calls.texts, TEXTS);
    assert.deepEqual(calls.errors, []);
    assert.deepEqual(service.resumes().map((r) => r.lastEventId), [`${ANSWER_ID}:1`]);
  });
});

test("an error event with an id is the answer's end: reported, not resumed", TEST, async () => {
  const failed = { error: { code: "upstream_interrupted", message: "m", retryable: true } };
  await withService({ texts: TEXTS.slice(0, 2), end: failed }, async (service) => {
    const { calls, result } = ask(service);
    const outcome = await result;
    assert.equal(outcome.error.code, "upstream_interrupted");
    assert.deepEqual(calls.texts, TEXTS.slice(0, 2));
    assert.equal(service.resumes().length, 0);
  });
});

// The first connection sends meta and one text, then stays open.
const HELD = { raw: frame(0, { meta: { answer_id: ANSWER_ID } }) + frame(1, { text: "w0 " }), hold: true };

function firstText(options = {}) {
  let seen;
  const arrived = new Promise((resolve) => (seen = resolve));
  return { arrived: within(arrived, 5_000, "the first text"), onText: (piece) => seen(piece), ...options };
}

test("abort posts exactly one cancel, for the right answer, and resolves aborted", TEST, async () => {
  await withService(HELD, async (service) => {
    const controller = new AbortController();
    const { arrived, onText } = firstText();
    const { handle, calls, result } = ask(service, { signal: controller.signal, onText });
    await arrived;
    assert.equal(handle.answerId, ANSWER_ID);
    assert.equal(handle.lastEventId, `${ANSWER_ID}:1`);
    handle.abort();
    handle.abort();
    controller.abort();
    const outcome = await result;
    assert.equal(outcome.status, "aborted");
    assert.equal(outcome.text, "w0 ");
    assert.deepEqual(calls.errors, []);
    await until(() => service.seen.cancels.length > 0, 2_000, "the cancel to arrive");
    await new Promise((resolve) => setTimeout(resolve, 200)); // room for a second one
    assert.deepEqual(service.seen.cancels, [ANSWER_ID]);
  });
});

test("streamAnswer's signal (the existing API) cancels the answer too", TEST, async () => {
  await withService(HELD, async (service) => {
    const controller = new AbortController();
    const { arrived, onText } = firstText();
    const pending = within(
      streamAnswer("q", { baseUrl: service.baseUrl, signal: controller.signal, onText }),
      5_000,
      "streamAnswer to settle",
    );
    await arrived;
    controller.abort();
    assert.equal((await pending).status, "aborted");
    await until(() => service.seen.cancels.length > 0, 2_000, "the cancel to arrive");
    assert.deepEqual(service.seen.cancels, [ANSWER_ID]);
  });
});

test("the cancel is a POST with keepalive, so it outlives the page's fetches", TEST, async () => {
  await withService(HELD, async (service) => {
    const original = globalThis.fetch;
    const inits = [];
    globalThis.fetch = (url, init) => (inits.push([String(url), init]), original(url, init));
    try {
      const { arrived, onText } = firstText();
      const { handle, result } = ask(service, { onText });
      await arrived;
      handle.abort();
      await result;
    } finally {
      globalThis.fetch = original;
    }
    const cancels = inits.filter(([url]) => url.endsWith("/cancel"));
    assert.equal(cancels.length, 1);
    assert.equal(cancels[0][0], `${service.baseUrl}/answers/${ANSWER_ID}/cancel`);
    assert.equal(cancels[0][1].method, "POST");
    assert.equal(cancels[0][1].keepalive, true);
    assert.equal(cancels[0][1].signal, undefined); // not aborted along with the stream
  });
});

test("abort before meta has no answer to cancel; abort after done cancels nothing", TEST, async () => {
  await withService({ raw: "", hold: true }, async (service) => {
    const { handle, result } = ask(service);
    await until(() => service.seen.requests.length > 0, 2_000, "the request to arrive");
    handle.abort();
    assert.equal((await result).status, "aborted");
    assert.equal(handle.answerId, "");
  });
  await withService({}, async (service) => {
    const { handle, result } = ask(service);
    assert.equal((await result).status, "done");
    handle.abort();
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(service.seen.cancels, []);
  });
});

test("abort while waiting to reconnect: aborted at once, one cancel, no more resumes", TEST, async () => {
  await withService({ cuts: [2] }, async (service) => {
    let handle;
    const { handle: started, calls, result } = ask(service, {
      retryDelayMs: 60_000, // a wait that would outlast the test's deadline
      maxRetryDelayMs: 60_000,
      onReconnect: () => setTimeout(() => handle.abort(), 50), // inside the wait
    });
    handle = started;
    const outcome = await within(result, 2_000, "abort to end the wait");
    assert.equal(outcome.status, "aborted");
    assert.deepEqual(calls.errors, []);
    await until(() => service.seen.cancels.length > 0, 2_000, "the cancel to arrive");
    assert.deepEqual(service.seen.cancels, [ANSWER_ID]);
    assert.equal(service.resumes().length, 0);
  });
});

test("abort({beacon: true}) sends the cancel with navigator.sendBeacon", TEST, async () => {
  await withService(HELD, async (service) => {
    const beacons = [];
    const hadNavigator = Object.getOwnPropertyDescriptor(globalThis, "navigator");
    Object.defineProperty(globalThis, "navigator", {
      value: { sendBeacon: (url, data) => (beacons.push([url, data]), true) },
      configurable: true,
    });
    try {
      const { arrived, onText } = firstText();
      const { handle, result } = ask(service, { onText });
      await arrived;
      handle.abort({ beacon: true });
      assert.equal((await result).status, "aborted");
    } finally {
      if (hadNavigator) Object.defineProperty(globalThis, "navigator", hadNavigator);
      else delete globalThis.navigator;
    }
    assert.deepEqual(beacons, [[`${service.baseUrl}/answers/${ANSWER_ID}/cancel`, undefined]]);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(service.seen.cancels, []); // the beacon went instead of a fetch
  });
});

test("cancelAnswer falls back to fetch when there is no beacon or it is refused", TEST, async () => {
  await withService({}, async (service) => {
    const hadNavigator = Object.getOwnPropertyDescriptor(globalThis, "navigator");
    Object.defineProperty(globalThis, "navigator", {
      value: { sendBeacon: () => false }, // the browser's beacon queue is full
      configurable: true,
    });
    try {
      assert.equal(await cancelAnswer("one", { baseUrl: service.baseUrl, beacon: true }), true);
    } finally {
      if (hadNavigator) Object.defineProperty(globalThis, "navigator", hadNavigator);
      else delete globalThis.navigator;
    }
    assert.equal(await cancelAnswer("two/x", { baseUrl: service.baseUrl, beacon: true }), true);
    assert.equal(await cancelAnswer("three", { baseUrl: service.baseUrl }), true);
    assert.deepEqual(service.seen.cancels, ["one", "two/x", "three"]);
    assert.ok(service.seen.requests.every((r) => r.method === "POST"));
  });
});
