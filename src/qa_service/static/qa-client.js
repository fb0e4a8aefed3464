// qa-client.js: a dependency-free client for qa-service's event stream.
//
//   import { streamAnswer, startAnswer, cancelAnswer } from "https://your-qa-service/qa-client.js";
//   const controller = new AbortController();   // controller.abort() = Stop (cancels the answer)
//   const result = await streamAnswer("photosynthesis", {
//     signal: controller.signal,
//     onMeta: (meta) => {},              // provider, model, request_id, answer_id, notice
//     onText: (piece, textSoFar) => {},  // insert as text, never as HTML; never a piece twice
//     onDone: (done, text) => {},        // finish_reason, usage, ttft_ms, chars
//     onError: (error, textSoFar, requestId) => {}, // code, message, retryable
//     onReconnect: ({ attempt, delayMs, answerId, lastEventId, error }) => {}, // optional
//     retries: 5, retryDelayMs: 250, maxRetryDelayMs: 2000,                   // the defaults
//     apiKey: "...",            // when the service has API keys: sent as Authorization: Bearer
//     history: [{ role: "user", content: "..." }, { role: "assistant", content: "..." }], // earlier turns
//     getTicket: async ({ query, prompt, scenario }) => ticket,  // or a stream ticket instead
//   });
//   // result.status is "done", "error" or "aborted"; result.requestId is the
//   // service's id for this request (quote it in bug reports), or "" if none;
//   // result.answerId is the answer's id ("" before meta); result.reconnects.
//
//   const handle = startAnswer("photosynthesis", { ... });  // same options
//   handle.answerId; handle.abort(); handle.abort({ beacon: true }); await handle.result;
//   addEventListener("pagehide", () => handle.abort({ beacon: true }));
//   cancelAnswer(answerId, { baseUrl, beacon: true });      // POST /answers/{id}/cancel
//
//   // API keys with EventSource, which cannot send headers: a single-use ticket.
//   const { ticket } = await requestTicket("photosynthesis", { apiKey });  // POST /stream-tickets
//   new EventSource(answerUrl("photosynthesis", { ticket }));
//   // Where the key must stay on a server, that server asks for the ticket, and the
//   // page passes getTicket (a function that fetches one from it) to startAnswer.
//
// It uses fetch (POST, so long questions stay out of URLs and logs) and a
// parser that follows the WHATWG event-stream rules, so events split across
// network chunks, CR / LF / CRLF line ends and UTF-8 characters cut in half
// all arrive intact. It stops on the terminal event (done or error), so it
// never asks the model twice. A connection that drops before it is resumed
// with GET /answers/{answer_id}/events and Last-Event-ID (bounded retries with
// backoff; see startAnswer), and aborting cancels the answer on the service
// (POST /answers/{answer_id}/cancel). The protocol is documented in
// docs/PROTOCOL.md.

/**
 * Incremental parser for text/event-stream bytes (WHATWG HTML, "Server-sent events").
 * feed() takes Uint8Array chunks in order, and end() is called when the stream
 * ends. onEvent receives {type, data, id} for each dispatched event.
 */
export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    // Stream mode keeps a multi-byte character that is split across chunks
    // until its last byte arrives. The decoder also drops a leading BOM.
    this.decoder = new TextDecoder("utf-8");
    this.line = "";
    this.afterCR = false;
    this.data = [];
    this.eventType = "";
    this.lastEventId = "";
    this.hasId = false; // whether the event being built had an id line of its own
    this.retry = null;
  }

  feed(bytes) {
    this.#text(this.decoder.decode(bytes, { stream: true }));
  }

  end() {
    this.#text(this.decoder.decode());
    // A last event without its blank line is discarded, as the spec says.
  }

  #text(chunk) {
    if (chunk === "") return;
    let start = 0;
    // A CRLF split across chunks: the LF belongs to the line the CR ended.
    if (this.afterCR && chunk.charCodeAt(0) === 10) start = 1;
    this.afterCR = false;
    for (let i = start; i < chunk.length; i++) {
      const code = chunk.charCodeAt(i);
      if (code !== 10 && code !== 13) continue;
      this.#processLine(this.line + chunk.slice(start, i));
      this.line = "";
      if (code === 13) {
        if (i + 1 === chunk.length) this.afterCR = true;
        else if (chunk.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
    }
    this.line += chunk.slice(start);
  }

  #processLine(line) {
    if (line === "") {
      this.#dispatch();
      return;
    }
    if (line.charCodeAt(0) === 58) return; // ":" starts a comment
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.eventType = value;
    else if (field === "id" && !value.includes("\0")) {
      this.lastEventId = value;
      this.hasId = true;
    }
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }

  #dispatch() {
    const hasId = this.hasId;
    this.hasId = false;
    if (this.data.length === 0) {
      this.eventType = "";
      return;
    }
    const event = {
      type: this.eventType || "message",
      data: this.data.join("\n"),
      id: this.lastEventId,
    };
    this.data = [];
    this.eventType = "";
    // event.id is the stream's last event id, which carries over to events
    // without an id line (as the spec says); the second argument tells them apart.
    this.onEvent(event, { hasId });
  }
}

const STREAM_CUT = {
  code: "stream_cut",
  message: "The connection ended before the answer did.",
  retryable: true,
};
const NETWORK_ERROR = {
  code: "network_error",
  message: "The service could not be reached.",
  retryable: true,
};
// A resume was answered 204 (the answer has ended and nothing is left after
// our Last-Event-ID) although no done or error event ever reached us.
const RESUME_INCOMPLETE = {
  code: "resume_incomplete",
  message: "The answer ended on the service, but its last events never arrived.",
  retryable: true,
};
const TICKET_UNAVAILABLE = {
  code: "ticket_unavailable",
  message: "No stream ticket could be obtained.",
  retryable: true,
};
const protocolError = (detail) => ({
  code: "protocol_error",
  message: `The service sent something the client cannot read: ${detail}.`,
  retryable: false,
});

// Thrown from the parser's callback, so a malformed event ends the read as a
// protocol error and is never mistaken for a broken connection.
class ProtocolError extends Error {}

// "<answer id>:<seq>" (docs/PROTOCOL.md); the answer id itself has no colon.
function parseEventId(id) {
  const match = /^(.+):(\d+)$/.exec(id);
  return match ? { answerId: match[1], seq: Number(match[2]) } : null;
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

async function readRefusal(response) {
  const refusal = await response.json().catch(() => null);
  return (
    refusal?.error ?? {
      code: `http_${response.status}`,
      message: `The service answered ${response.status}.`,
      retryable: response.status >= 500,
    }
  );
}

const bearer = (apiKey) => (apiKey ? { Authorization: `Bearer ${apiKey}` } : {});

/**
 * The GET /ai_write URL for a question, e.g. for EventSource; with `ticket`
 * (from requestTicket, for this same query, prompt and scenario) when the
 * service has API keys.
 */
export function answerUrl(query, { baseUrl = "", prompt, scenario, ticket } = {}) {
  const params = new URLSearchParams({ query });
  if (prompt) params.set("prompt", prompt);
  if (scenario) params.set("scenario", scenario);
  if (ticket) params.set("ticket", ticket);
  return `${baseUrl}/ai_write?${params}`;
}

/**
 * A single-use stream ticket for one GET /ai_write of this request:
 * POST /stream-tickets with the API key. Resolves to {ticket, expires_in};
 * rejects with the service's error ({code, message, retryable}), e.g.
 * `unauthorized`, or with `network_error`.
 */
export async function requestTicket(query, { baseUrl = "", apiKey, prompt, scenario, signal } = {}) {
  const body = { query };
  if (prompt) body.prompt = prompt;
  if (scenario) body.scenario = scenario;
  let response;
  try {
    response = await fetch(`${baseUrl}/stream-tickets`, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...bearer(apiKey) },
      body: JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch {
    throw NETWORK_ERROR;
  }
  if (!response.ok) throw await readRefusal(response);
  return response.json();
}

/**
 * Ask the service to stop an answer: POST /answers/{answerId}/cancel.
 * With `beacon: true` (for a closing tab, e.g. on `pagehide`) it uses
 * navigator.sendBeacon, which outlives the page; without it, or where the
 * beacon is unavailable or refused, a fetch with keepalive: true.
 * Resolves to true when the request was queued (beacon) or answered 2xx (fetch).
 * It never throws.
 */
export function cancelAnswer(answerId, { baseUrl = "", beacon = false, apiKey } = {}) {
  const url = `${baseUrl}/answers/${encodeURIComponent(answerId)}/cancel`;
  if (beacon && typeof navigator !== "undefined" && typeof navigator.sendBeacon === "function") {
    try {
      // No body: the service needs none, and a bodyless beacon needs no CORS preflight.
      if (navigator.sendBeacon(url)) return Promise.resolve(true);
    } catch {
      // A URL the beacon refuses: fall back to fetch.
    }
  }
  try {
    const headers = bearer(apiKey);
    return fetch(url, { method: "POST", keepalive: true, cache: "no-store", headers }).then(
      (response) => response.ok,
      () => false,
    );
  } catch {
    return Promise.resolve(false);
  }
}

/**
 * Start an answer and return a handle at once:
 *   { result, abort({beacon}), answerId, lastEventId }
 * `result` resolves like streamAnswer's. `abort()` stops reading and, once the
 * answer id is known (from the meta event), asks the service to cancel the
 * answer (exactly once), so the provider stops generating; `abort({beacon: true})`
 * does so with navigator.sendBeacon, for a page that is going away. Aborting
 * options.signal does the same as abort().
 *
 * After a network drop (the fetch fails, or the body ends before `done` or
 * `error`), it resumes by itself: up to `retries` reconnects (default 5) with
 * a doubling delay (`retryDelayMs`, default 250, capped at `maxRetryDelayMs`,
 * default 2000), counted again from zero whenever a reconnect brings new
 * events. It resumes with GET /answers/{answer_id}/events and a Last-Event-ID
 * header rather than by repeating POST /ai_write: that endpoint needs neither
 * the question again nor a body, and its id is the capability, so a long
 * question is sent once. Events are counted by the seq in their id and any
 * event at or below the last seen seq is skipped, so onText never sees a piece
 * twice. onReconnect({attempt, delayMs, answerId, lastEventId, error}) is
 * called before each reconnect. Nothing is resumed if the drop came before
 * the meta event (there is no answer to resume yet), on a 4xx (e.g. 404
 * answer_not_found), or on a 204 without a terminal event (resume_incomplete).
 *
 * `history`: a conversation's earlier turns, oldest first, alternating
 * {role: "user", content} and {role: "assistant", content}; the new question
 * stays `query`. It goes in the POST body, so it cannot be used with getTicket
 * (whose GET has no body): that combination throws a TypeError.
 *
 * With API keys on the service, pass `apiKey` (sent on every request as
 * `Authorization: Bearer`), or `getTicket`: an async function given
 * {query, prompt, scenario, signal} that returns a stream ticket (or
 * requestTicket's {ticket}), for a key kept on another server. The answer is
 * then asked with GET /ai_write?...&ticket=. A resume or a cancel needs
 * neither: the answer's id authorises them. If getTicket throws, the answer
 * fails with what it threw when that has a `code`, else `ticket_unavailable`.
 */
export function startAnswer(query, options = {}) {
  const {
    baseUrl = "",
    prompt,
    scenario,
    signal,
    headers = {},
    onMeta,
    onText,
    onDone,
    onError,
    onReconnect,
    retries = 5,
    retryDelayMs = 250,
    maxRetryDelayMs = 2000,
    apiKey,
    getTicket,
    history,
  } = options;
  if (history?.length && getTicket) {
    throw new TypeError("history is sent in a POST body; a stream ticket's GET cannot carry it");
  }
  const auth = bearer(apiKey);
  const body = { query };
  if (prompt) body.prompt = prompt;
  if (scenario) body.scenario = scenario;
  if (history?.length) body.history = history;

  // One controller for every connection of this answer; options.signal feeds it.
  const stop = new AbortController();
  let answerId = "";
  let lastEventId = "";
  let lastSeq = -1;
  let finished = false; // a terminal event arrived, or the result is settled
  let cancelSent = false;

  const abort = ({ beacon = false } = {}) => {
    if (!finished && answerId && !cancelSent) {
      cancelSent = true;
      cancelAnswer(answerId, { baseUrl, beacon, apiKey });
    }
    stop.abort();
  };
  const onSignalAbort = () => abort();
  if (signal?.aborted) abort();
  else signal?.addEventListener("abort", onSignalAbort, { once: true });

  const connect = (resume, ticket) => {
    if (resume) {
      return fetch(`${baseUrl}/answers/${encodeURIComponent(answerId)}/events`, {
        headers: { Accept: "text/event-stream", ...auth, ...headers, "Last-Event-ID": lastEventId },
        signal: stop.signal,
        cache: "no-store",
      });
    }
    // A new answer's request has no `cache: "no-store"`: with it, browsers and
    // node send `Cache-Control: no-cache` (with `Pragma: no-cache`, which the
    // service takes as the browser's own and ignores; a page that leaves the
    // header alone is plainly asking no bypass). Neither
    // request is served from an HTTP cache anyway: a POST never is, and a
    // ticket is good for one GET.
    if (ticket !== undefined) {
      return fetch(answerUrl(query, { baseUrl, prompt, scenario, ticket }), {
        headers: { Accept: "text/event-stream", ...headers },
        signal: stop.signal,
      });
    }
    return fetch(`${baseUrl}/ai_write`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...auth, ...headers },
      body: JSON.stringify(body),
      signal: stop.signal,
    });
  };
  // A ticket from getTicket, for a new answer only: a resume needs none.
  const fetchTicket = async () => {
    const got = await getTicket({ query, prompt, scenario, signal: stop.signal });
    const ticket = typeof got === "string" ? got : got?.ticket;
    if (typeof ticket !== "string" || !ticket) throw TICKET_UNAVAILABLE;
    return ticket;
  };

  async function run() {
    let text = "";
    let requestId = "";
    let reconnects = 0;
    const settle = (result) => ({ ...result, text, requestId, answerId, reconnects });
    const fail = (error) => {
      onError?.(error, text, requestId);
      return settle({ status: "error", error });
    };
    const aborted = () => settle({ status: "aborted" });
    // Only an answer whose meta and at least one event id arrived can be resumed.
    const resumable = () => answerId !== "" && lastEventId !== "";

    let outcome = null; // { done } or { error }: the terminal event
    let connectionError = null; // an id-less error event: it ends this connection only
    const handleEvent = (event, { hasId = true } = {}) => {
      let payload;
      try {
        payload = JSON.parse(event.data);
      } catch {
        throw new ProtocolError("an event's data is not JSON");
      }
      if (payload === null || typeof payload !== "object") {
        throw new ProtocolError("an event's data is not a JSON object");
      }
      const ref = hasId ? parseEventId(event.id) : null;
      if (ref) {
        if (answerId && ref.answerId !== answerId) {
          throw new ProtocolError("an event of another answer arrived");
        }
        if (ref.seq <= lastSeq) return; // replayed: delivered already
        lastSeq = ref.seq;
      }
      if (hasId) lastEventId = event.id;
      else if ("error" in payload && payload.error?.retryable && answerId) {
        // Events without an id belong to this connection only (for example
        // shutting_down from a replica that relays an answer generated
        // elsewhere): the answer itself goes on, so resume if we may.
        connectionError = payload.error;
        return;
      }
      if ("text" in payload) {
        text += payload.text;
        onText?.(payload.text, text);
      } else if ("meta" in payload) {
        requestId = payload.meta.request_id ?? requestId;
        answerId = payload.meta.answer_id ?? ref?.answerId ?? "";
        if (ref && ref.answerId !== answerId) {
          throw new ProtocolError("the meta event's id names another answer");
        }
        onMeta?.(payload.meta);
      } else if ("done" in payload) outcome = { done: payload.done };
      else if ("error" in payload) outcome = { error: payload.error };
      if (outcome) finished = true;
    };

    let resuming = false;
    let attempt = 0; // reconnects since the last one that brought new events
    let drop = null; // what to report if we give up
    for (;;) {
      if (resuming) {
        if (attempt >= retries) return fail(drop);
        const delayMs = Math.min(retryDelayMs * 2 ** attempt, maxRetryDelayMs);
        attempt += 1;
        reconnects += 1;
        onReconnect?.({ attempt, delayMs, answerId, lastEventId, error: drop });
        try {
          await sleep(delayMs, stop.signal);
        } catch {
          return aborted();
        }
      }

      let ticket;
      if (!resuming && getTicket) {
        try {
          ticket = await fetchTicket();
        } catch (error) {
          if (stop.signal.aborted) return aborted();
          return fail(error?.code ? error : TICKET_UNAVAILABLE);
        }
      }
      let response;
      try {
        response = await connect(resuming, ticket);
      } catch {
        if (stop.signal.aborted) return aborted();
        drop = NETWORK_ERROR;
        if (!resumable()) return fail(drop);
        resuming = true;
        continue;
      }
      // Readable cross-origin too: the service lists it in Access-Control-Expose-Headers.
      // A resume keeps the first request's id: that is the one the answer was logged under.
      if (!resuming) requestId = response.headers.get("X-Request-ID") ?? "";
      if (resuming && response.status === 204) {
        // The answer has ended and nothing is left after our Last-Event-ID.
        // We stop reading at the terminal event, so we cannot have seen it.
        response.body?.cancel().catch(() => {});
        return fail(RESUME_INCOMPLETE);
      }
      if (!response.ok) {
        const refusal = await readRefusal(response);
        // A 5xx during a resume (a proxy whose upstream restarts, store_unavailable)
        // may pass; a 4xx (answer_not_found, ...) will not.
        if (resuming && response.status >= 500) {
          drop = refusal;
          continue;
        }
        return fail(refusal);
      }

      const seqBefore = lastSeq;
      connectionError = null;
      let protocolProblem = null;
      const parser = new SSEParser(handleEvent);
      const reader = response.body.getReader();
      try {
        while (!outcome && !connectionError) {
          const { value, done } = await reader.read();
          if (done) {
            parser.end();
            break;
          }
          parser.feed(value);
        }
      } catch (error) {
        if (stop.signal.aborted) return aborted();
        if (error instanceof ProtocolError) protocolProblem = protocolError(error.message);
        // Otherwise the connection broke: a drop, handled below.
      } finally {
        // Stop reading at the terminal event: nothing is asked twice.
        reader.cancel().catch(() => {});
      }
      if (protocolProblem) return fail(protocolProblem);
      if (outcome?.done) {
        onDone?.(outcome.done, text);
        return settle({ status: "done", done: outcome.done });
      }
      if (outcome?.error) return fail(outcome.error);

      // A drop. Progress resets the count, so a long answer survives many drops.
      if (lastSeq > seqBefore) attempt = 0;
      drop = connectionError ?? STREAM_CUT;
      if (!resumable()) return fail(drop);
      resuming = true;
    }
  }

  const result = run().finally(() => {
    finished = true;
    signal?.removeEventListener("abort", onSignalAbort);
  });
  return {
    result,
    abort,
    get answerId() {
      return answerId;
    },
    get lastEventId() {
      return lastEventId;
    },
  };
}

/**
 * Ask a question and stream the answer. It never throws: it resolves to
 * {status: "done", text, done} | {status: "error", text, error} | {status: "aborted", text},
 * each with `requestId` (the X-Request-ID header, or the meta event's; "" without
 * a response), `answerId` (from the meta event; "" before it) and `reconnects`.
 * Aborting options.signal stops it and cancels the answer on the service.
 * See startAnswer for resumption, and for a handle with abort() and answerId.
 */
export async function streamAnswer(query, options = {}) {
  return startAnswer(query, options).result;
}
