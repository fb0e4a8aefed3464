// qa-client.js with API keys: the key as a Bearer header, or a stream ticket
// from getTicket / requestTicket. node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

import { answerUrl, requestTicket, startAnswer, streamAnswer } from "../../src/qa_service/static/qa-client.js";
import { withFetch } from "./support/fetch.mjs";

const encoder = new TextEncoder();
const ANSWER_ID = "AbCdEfGhIjKlMnOpQrSt-_";
const event = (seq, payload) => `id: ${ANSWER_ID}:${seq}\ndata: ${JSON.stringify(payload)}\n\n`;
const WHOLE = [event(0, { meta: { answer_id: ANSWER_ID } }), event(1, { text: "hi" }), event(2, { done: {} })];

// A fetch that records each call and answers with the next scripted response.
function recordingFetch(responses) {
  const calls = [];
  const fetchImpl = async (url, init = {}) => {
    calls.push({ url: String(url), method: init.method ?? "GET", headers: new Headers(init.headers), body: init.body });
    const next = responses.shift();
    if (next.json) {
      return new Response(JSON.stringify(next.json), { status: next.status ?? 200, headers: { "content-type": "application/json" } });
    }
    const body = new ReadableStream({
      start(controller) {
        for (const chunk of next.events) controller.enqueue(encoder.encode(chunk));
        controller.close();
      },
    });
    return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  };
  return { calls, fetchImpl };
}

test("apiKey goes as a Bearer header on the POST and on a resume", async () => {
  const cut = { events: WHOLE.slice(0, 2) }; // ends before done: a drop
  const rest = { events: WHOLE.slice(2) };
  const { calls, fetchImpl } = recordingFetch([cut, rest]);
  const result = await withFetch(fetchImpl, () =>
    streamAnswer("q", { apiKey: "k-123", retryDelayMs: 1, maxRetryDelayMs: 1 }),
  );
  assert.equal(result.status, "done");
  assert.equal(calls[0].method, "POST");
  assert.equal(calls[0].headers.get("authorization"), "Bearer k-123");
  assert.match(calls[1].url, /\/answers\/.+\/events$/);
  assert.equal(calls[1].headers.get("authorization"), "Bearer k-123");
});

test("without apiKey no Authorization header is sent", async () => {
  const { calls, fetchImpl } = recordingFetch([{ events: WHOLE }]);
  await withFetch(fetchImpl, () => streamAnswer("q"));
  assert.equal(calls[0].headers.get("authorization"), null);
});

test("getTicket makes the answer a GET with the ticket; the resume needs no new ticket", async () => {
  const asked = [];
  const getTicket = async (request) => {
    asked.push({ query: request.query, prompt: request.prompt, scenario: request.scenario });
    return "T".repeat(43);
  };
  const { calls, fetchImpl } = recordingFetch([{ events: WHOLE.slice(0, 2) }, { events: WHOLE.slice(2) }]);
  const result = await withFetch(fetchImpl, () =>
    startAnswer("a b&c", { prompt: "eli5", getTicket, retryDelayMs: 1, maxRetryDelayMs: 1 }).result,
  );
  assert.equal(result.status, "done");
  assert.equal(result.text, "hi");
  assert.deepEqual(asked, [{ query: "a b&c", prompt: "eli5", scenario: undefined }]);
  const first = new URL(calls[0].url, "http://service");
  assert.equal(calls[0].method, "GET");
  assert.equal(first.pathname, "/ai_write");
  assert.deepEqual([...first.searchParams], [["query", "a b&c"], ["prompt", "eli5"], ["ticket", "T".repeat(43)]]);
  assert.equal(calls[0].body, undefined);
  assert.equal(calls[0].headers.get("authorization"), null);
  assert.equal(new URL(calls[1].url, "http://service").search, ""); // the resume: no ticket
});

test("getTicket may return requestTicket's {ticket, expires_in}", async () => {
  const { calls, fetchImpl } = recordingFetch([{ events: WHOLE }]);
  await withFetch(fetchImpl, () =>
    streamAnswer("q", { getTicket: async () => ({ ticket: "abc", expires_in: 60 }) }),
  );
  assert.equal(new URL(calls[0].url, "http://service").searchParams.get("ticket"), "abc");
});

test("a getTicket failure ends the answer with its error, or ticket_unavailable, asking nothing", async () => {
  const refusal = { code: "unauthorized", message: "no", retryable: false };
  for (const [thrown, code] of [[refusal, "unauthorized"], [new Error("boom"), "ticket_unavailable"]]) {
    const { calls, fetchImpl } = recordingFetch([]);
    let reported;
    const result = await withFetch(fetchImpl, () =>
      streamAnswer("q", {
        getTicket: async () => {
          throw thrown;
        },
        onError: (error) => (reported = error.code),
      }),
    );
    assert.equal(result.status, "error");
    assert.equal(result.error.code, code);
    assert.equal(reported, code);
    assert.equal(calls.length, 0);
  }
});

test("requestTicket POSTs the request with the key and returns the ticket", async () => {
  const { calls, fetchImpl } = recordingFetch([{ json: { ticket: "t1", expires_in: 60 } }]);
  const got = await withFetch(fetchImpl, () =>
    requestTicket("q", { baseUrl: "http://svc", apiKey: "k-1", scenario: "normal" }),
  );
  assert.deepEqual(got, { ticket: "t1", expires_in: 60 });
  assert.equal(calls[0].url, "http://svc/stream-tickets");
  assert.equal(calls[0].method, "POST");
  assert.equal(calls[0].headers.get("authorization"), "Bearer k-1");
  assert.equal(calls[0].headers.get("content-type"), "application/json");
  assert.deepEqual(JSON.parse(calls[0].body), { query: "q", scenario: "normal" });
});

test("requestTicket rejects with the service's refusal", async () => {
  const refusal = { error: { code: "unauthorized", message: "key", retryable: false } };
  const { fetchImpl } = recordingFetch([{ json: refusal, status: 401 }]);
  await assert.rejects(
    withFetch(fetchImpl, () => requestTicket("q", { apiKey: "wrong" })),
    (error) => error.code === "unauthorized",
  );
});

test("answerUrl encodes every field for an EventSource", () => {
  const url = answerUrl("1+1=? & more", { baseUrl: "http://svc", prompt: "eli5", ticket: "t_-1" });
  const parsed = new URL(url);
  assert.equal(parsed.origin + parsed.pathname, "http://svc/ai_write");
  assert.equal(parsed.searchParams.get("query"), "1+1=? & more");
  assert.equal(parsed.searchParams.get("prompt"), "eli5");
  assert.equal(parsed.searchParams.get("ticket"), "t_-1");
  assert.equal(parsed.searchParams.has("scenario"), false);
});
