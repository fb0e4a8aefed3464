// qa-client.js: a dependency-free client for qa-service's event stream.
//
//   import { streamAnswer } from "https://your-qa-service/qa-client.js";
//   const controller = new AbortController();
//   const result = await streamAnswer("photosynthesis", {
//     signal: controller.signal,
//     onMeta: (meta) => {},              // provider, model, request_id, notice
//     onText: (piece, textSoFar) => {},  // insert as text, never as HTML
//     onDone: (done, text) => {},        // finish_reason, usage, ttft_ms, chars
//     onError: (error, textSoFar, requestId) => {}, // code, message, retryable
//   });
//   // result.status is "done", "error" or "aborted"; result.requestId is the
//   // service's id for this request (quote it in bug reports), or "" if none
//
// It uses fetch (POST, so long questions stay out of URLs and logs) and a
// parser that follows the WHATWG event-stream rules, so events split across
// network chunks, CR / LF / CRLF line ends and UTF-8 characters cut in half
// all arrive intact. It stops on the terminal event, so unlike EventSource it
// never reconnects and never asks the model twice. The protocol is documented
// in docs/PROTOCOL.md.

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
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
  }

  #dispatch() {
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
    this.onEvent(event);
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

/**
 * Ask a question and stream the answer. It never throws: it resolves to
 * {status: "done", text, done} | {status: "error", text, error} | {status: "aborted", text},
 * each with `requestId`: the X-Request-ID header (or the meta event's), "" without a response.
 */
export async function streamAnswer(query, options = {}) {
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
  } = options;
  const body = { query };
  if (prompt) body.prompt = prompt;
  if (scenario) body.scenario = scenario;

  let text = "";
  let requestId = "";
  const fail = (error) => {
    onError?.(error, text, requestId);
    return { status: "error", text, error, requestId };
  };
  const aborted = (error) => signal?.aborted || error?.name === "AbortError";

  let response;
  try {
    response = await fetch(`${baseUrl}/ai_write`, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "text/event-stream",
        ...headers,
      },
      body: JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (error) {
    return aborted(error) ? { status: "aborted", text, requestId } : fail(NETWORK_ERROR);
  }
  // Readable cross-origin too: the service lists it in Access-Control-Expose-Headers.
  requestId = response.headers.get("X-Request-ID") ?? "";
  if (!response.ok) {
    const refusal = await response.json().catch(() => null);
    return fail(
      refusal?.error ?? {
        code: `http_${response.status}`,
        message: `The service answered ${response.status}.`,
        retryable: response.status >= 500,
      },
    );
  }

  let outcome = null;
  const parser = new SSEParser((event) => {
    if (outcome) return;
    const payload = JSON.parse(event.data);
    if ("text" in payload) {
      text += payload.text;
      onText?.(payload.text, text);
    } else if ("meta" in payload) {
      requestId = payload.meta.request_id ?? requestId;
      onMeta?.(payload.meta);
    }
    else if ("done" in payload) outcome = { done: payload.done };
    else if ("error" in payload) outcome = { error: payload.error };
  });
  const reader = response.body.getReader();
  try {
    while (!outcome) {
      const { value, done } = await reader.read();
      if (done) {
        parser.end();
        break;
      }
      parser.feed(value);
    }
  } catch (error) {
    if (aborted(error)) return { status: "aborted", text, requestId };
    // Otherwise the connection broke: reported below as stream_cut.
  } finally {
    // Stop reading at the terminal event: nothing reconnects, nothing is asked twice.
    reader.cancel().catch(() => {});
  }
  if (outcome?.done) {
    onDone?.(outcome.done, text);
    return { status: "done", text, done: outcome.done, requestId };
  }
  return fail(outcome?.error ?? STREAM_CUT);
}
