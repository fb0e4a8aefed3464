// The Vercel AI SDK's own client (the `ai` package, each major side by side:
// tests/js/package.json) against the real service's POST /api/chat and its
// resume, GET /api/chat/{id}/stream. No parser of ours: DefaultChatTransport
// sends and validates every chunk against its uiMessageChunkSchema, and
// readUIMessageStream builds the message, as useChat does.
//
// Run by tests/integration/test_ai_sdk_client.py, which starts the provider
// stub and the service and passes what it scripted in QA_AI_SDK_PLAN (the file
// name keeps `node --test tests/js/` from running it without them):
//   { url, resumeUrl, exact: {question, text}, length: {question, text},
//     failing: {question}, slow: {question, text}, blank: {question},
//     silent: {question, text}, cached: {url, question, text} }
// (`cached.url`: a service with the answer cache on.)
import assert from "node:assert/strict";
import { test } from "node:test";

const plan = JSON.parse(process.env.QA_AI_SDK_PLAN ?? "null");
assert.ok(plan, "QA_AI_SDK_PLAN is not set: run tests/integration/test_ai_sdk_client.py");

// 5.0.92 is the oldest ai 5 that takes `finish.finishReason`, and it still
// validates chunks with strictObject: an unknown field fails it.
const SDKS = {
  "ai 5.0.92": await import("ai5.0.92"),
  "ai 5": await import("ai5"),
  "ai 6": await import("ai6"),
  "ai 7": await import("ai7"),
};
const TEST = { timeout: 20_000 }; // every test has a deadline
let chats = 0;

function userMessage(text) {
  return { id: `u${++chats}`, role: "user", parts: [{ type: "text", text }] };
}

// A browser's cookie jar, as much of one as the service needs: the `qa_chat`
// cookie a POST sets, sent back on every later request (node's fetch keeps
// none). A resume is found only with the cookie of the browser that posted
// the chat. Both replicas are on 127.0.0.1, and a cookie ignores the port.
function browser() {
  const cookies = new Map();
  return async (url, init = {}) => {
    const headers = new Headers(init.headers);
    if (cookies.size) {
      headers.set("cookie", [...cookies].map(([name, value]) => `${name}=${value}`).join("; "));
    }
    const response = await fetch(url, { ...init, headers });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(";");
      const at = pair.indexOf("=");
      cookies.set(pair.slice(0, at).trim(), pair.slice(at + 1).trim());
    }
    return response;
  };
}

// One browser for all of each test's requests, as on one page.
const BROWSER = browser();

// Answers start on one replica; resumes go to the other (they share Redis).
function transportOf(sdk, base = plan.url, fetch = BROWSER) {
  return new sdk.DefaultChatTransport({ api: `${base}/api/chat`, fetch });
}

// A chat id as useChat makes one (the service refuses ids under 16 characters).
function chatIdOf(sdk, label) {
  return `${label}-${sdk.generateId()}`;
}

async function send(sdk, chatId, question, abortSignal) {
  return transportOf(sdk).sendMessages({
    chatId,
    messages: [userMessage(question)],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal,
  });
}

// The last message readUIMessageStream built, and the chunks' finish reason.
// Either read failing fails the whole (Promise.all: neither is left unhandled).
async function readAll(sdk, chunks) {
  const [forMessage, forFinish] = chunks.tee();
  const finishReason = (async () => {
    let reason;
    for await (const chunk of forFinish) {
      if (chunk.type === "finish") reason = chunk.finishReason;
    }
    return reason;
  })();
  const message = (async () => {
    let last;
    for await (const snapshot of sdk.readUIMessageStream({ stream: forMessage, terminateOnError: true })) {
      last = snapshot;
    }
    return last;
  })();
  const [built, reason] = await Promise.all([message, finishReason]);
  return { message: built, finishReason: reason };
}

function textOf(message) {
  return message.parts
    .filter((part) => part.type === "text")
    .map((part) => part.text)
    .join("");
}

for (const [name, sdk] of Object.entries(SDKS)) {
  test(`${name}: the message text is exact, with its id and finish reason`, TEST, async () => {
    const { message, finishReason } = await readAll(sdk, await send(sdk, chatIdOf(sdk, "exact"), plan.exact.question));

    assert.equal(textOf(message), plan.exact.text);
    assert.equal(message.role, "assistant");
    assert.match(message.id, /^[A-Za-z0-9_-]{22}$/); // our answer id
    assert.equal(finishReason, "stop");
  });

  test(`${name}: keep-alives while the model is silent do not disturb the stream`, TEST, async () => {
    const { message, finishReason } = await readAll(sdk, await send(sdk, chatIdOf(sdk, "silent"), plan.silent.question));

    assert.equal(textOf(message), plan.silent.text);
    assert.equal(finishReason, "stop");
  });

  test(`${name}: a provider's finish reason arrives in the SDK's words`, TEST, async () => {
    const { message, finishReason } = await readAll(sdk, await send(sdk, chatIdOf(sdk, "length"), plan.length.question));

    assert.equal(textOf(message), plan.length.text);
    assert.equal(finishReason, "length");
  });

  test(`${name}: an upstream failure mid-stream arrives as an error with our code`, TEST, async () => {
    const chunks = await send(sdk, chatIdOf(sdk, "failing"), plan.failing.question);

    await assert.rejects(readAll(sdk, chunks), (error) => {
      assert.equal(error.message, "upstream_interrupted: The model provider's stream was cut off.");
      return true;
    });
  });

  test(`${name}: a refusal before the stream is an error of sendMessages`, TEST, async () => {
    await assert.rejects(send(sdk, chatIdOf(sdk, "blank"), plan.blank.question), (error) => {
      assert.match(error.message, /"code":"query_required"/);
      return true;
    });
  });

  test(`${name}: resume replays the whole message once, then there is nothing to resume`, TEST, async () => {
    const chatId = chatIdOf(sdk, "slow");
    const hangUp = new AbortController();
    // The SDK's parsed chunks, read until some text arrived: the page reloads here.
    // (Not readUIMessageStream: ai 5.0.92's throws when left early.)
    const first = (await send(sdk, chatId, plan.slow.question, hangUp.signal)).getReader();
    let firstId;
    for (let chunk = await first.read(); chunk.value.type !== "text-delta"; chunk = await first.read()) {
      if (chunk.value.type === "start") firstId = chunk.value.messageId;
    }
    hangUp.abort();
    await first.cancel().catch(() => {}); // already failing with the abort

    const resumed = await transportOf(sdk, plan.resumeUrl).reconnectToStream({ chatId });
    assert.notEqual(resumed, null, "the answer was still being written");
    const { message, finishReason } = await readAll(sdk, resumed);

    assert.equal(message.id, firstId);
    assert.equal(textOf(message), plan.slow.text); // from its start, and only once
    assert.equal(message.parts.filter((part) => part.type === "text").length, 1);
    assert.equal(finishReason, "stop");
    assert.equal(await transportOf(sdk, plan.resumeUrl).reconnectToStream({ chatId }), null);
  });

  test(`${name}: another browser, with the chat's id, has nothing to resume`, TEST, async () => {
    const chatId = chatIdOf(sdk, "other");
    const hangUp = new AbortController();
    const first = (await send(sdk, chatId, plan.slow.question, hangUp.signal)).getReader();
    for (let chunk = await first.read(); chunk.value.type !== "text-delta"; chunk = await first.read()) {}

    const elsewhere = transportOf(sdk, plan.resumeUrl, browser());
    const resumed = await elsewhere.reconnectToStream({ chatId });
    hangUp.abort();
    await first.cancel().catch(() => {});

    assert.equal(resumed, null);
  });

  test(`${name}: asked again, the answer is a hit of the cache with the same text`, TEST, async () => {
    const said = [];
    const noting = async (url, init) => {
      const response = await fetch(url, init);
      said.push(response.headers.get("x-qa-cache"));
      return response;
    };
    const ask = async () => {
      const transport = new sdk.DefaultChatTransport({ api: `${plan.cached.url}/api/chat`, fetch: noting });
      const chunks = await transport.sendMessages({
        chatId: chatIdOf(sdk, "cached"),
        messages: [userMessage(`${plan.cached.question} ${name}`)],
        trigger: "submit-message",
        messageId: undefined,
      });
      return readAll(sdk, chunks);
    };

    const first = await ask();
    // Asked just as the first ends, the question may still join it (exact too): again.
    let again = await ask();
    while (said.at(-1) === "join" && said.length < 20) again = await ask();

    assert.equal(said[0], "miss");
    assert.equal(said.at(-1), "hit");
    assert.equal(textOf(first.message), plan.cached.text);
    assert.equal(textOf(again.message), plan.cached.text);
    assert.equal(again.finishReason, "stop");
  });

  test(`${name}: a chat with no answer has nothing to resume`, TEST, async () => {
    assert.equal(await transportOf(sdk, plan.resumeUrl).reconnectToStream({ chatId: chatIdOf(sdk, "never") }), null);
  });
}
