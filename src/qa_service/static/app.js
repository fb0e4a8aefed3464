// The demo page: a conversation. Each question streams its answer into the
// thread (thread.js, rendered as Markdown by markdown.js) with qa-client.js,
// which resumes it by itself after a network drop (the page only says so while
// it waits) and cancels it on the service when Stop, Escape, "New conversation"
// or closing the tab ends it. A follow-up question carries the finished turns
// before it as `history`.
// With API keys on the service, a 401 shows a key field; the key is kept in
// sessionStorage (this tab only) and sent as a Bearer header.
// What the page offers (provider, demo notice, scenarios, the query limit)
// comes from GET /readyz and GET /prompts; nothing is hard-coded here.
import { startAnswer } from "/qa-client.js";
import { Thread } from "/static/thread.js";

const $ = (id) => document.getElementById(id);
const form = $("ask-form");
const question = $("question");
const counter = $("counter");
const problem = $("question-problem");
const askButton = $("ask");
const stopButton = $("stop");
const waiting = $("waiting");
const waitingText = $("waiting-text");
const threadSection = $("thread");
const thread = new Thread($("turns"), $("turn-template"));
const newConversationButton = $("new-conversation");
const provider = $("provider");
const notice = $("notice");
const errorBox = $("error");
const errorTitle = $("error-title");
const errorMessage = $("error-message");
const errorCode = $("error-code");
const errorRequest = $("error-request");
const errorRequestId = $("error-request-id");
const copyButton = $("copy-id");
const retryButton = $("retry");
const promptSelect = $("prompt");
const scenarioField = $("scenario-field");
const scenarioSelect = $("scenario");
const keyForm = $("key-form");
const keyInput = $("api-key");
const keyHelp = $("key-help");

let maxChars = null; // from /readyz
const FIRST_PLACEHOLDER = question.placeholder;
let current = null; // the running answer's handle from startAnswer
let lastRequest = null; // {query, prompt, scenario, turn}: what Try again and a new key ask again

// What a person should read first; the service's own message follows it.
const FRIENDLY = {
  query_required: "Type a question first.",
  query_too_long: "That question is too long.",
  unknown_prompt: "That style is not available.",
  unknown_scenario: "That demo scenario is not available here.",
  invalid_request: "The page sent a request the service could not read.",
  body_too_large: "That question is too long.",
  cross_site_refused: "The service does not take questions from this site's pages.",
  unauthorized: "This service needs an API key.",
  not_ready: "The service is starting or stopping. Try again in a moment.",
  shutting_down: "The service restarted while answering. Try again.",
  upstream_auth_failed: "The model provider rejected the service's key. The operator must fix it.",
  upstream_rate_limited: "The model provider is busy. Try again in a moment.",
  upstream_bad_request: "The model provider refused this request.",
  upstream_unavailable: "The model provider is not answering. Try again in a moment.",
  upstream_timeout: "The model provider took too long to answer.",
  upstream_interrupted: "The answer was cut off.",
  upstream_incomplete: "The answer ended early.",
  upstream_error: "The model provider reported an error.",
  network_error: "The service could not be reached. Check the connection.",
  stream_cut: "The connection dropped before the answer was finished.",
  answer_not_found: "The connection dropped, and the answer could no longer be found.",
  resume_mismatch: "The connection dropped, and the service would not resume this answer.",
  invalid_last_event_id: "The connection dropped, and the answer could not be resumed.",
  resume_incomplete: "The connection dropped, and the end of the answer was lost.",
  protocol_error: "The page could not read the service's answer.",
  cancelled: "The answer was stopped.",
  producer_lost: "The server writing the answer stopped. Try again.",
  store_unavailable: "The service lost track of the answer. Try again.",
  internal_error: "The service failed. Quote the request id when you report it.",
  history_too_long: "This conversation is too long to send. Start a new conversation.",
};

// The waiting state: before the first text, and whenever the model falls
// silent for a while, a spinner and the seconds waited so far.
const SILENCE_MS = 1500;
let waitTimer = 0;
let startedAt = 0;
let lastTextAt = 0;
let sawText = false;
let reconnecting = null; // {attempt, of} while the client resumes after a drop
function startWaiting() {
  startedAt = performance.now();
  lastTextAt = startedAt;
  sawText = false;
  reconnecting = null;
  clearInterval(waitTimer);
  waitTimer = setInterval(showWaiting, 250);
  showWaiting();
}
function noteText() {
  sawText = true;
  reconnecting = null;
  lastTextAt = performance.now();
  waiting.hidden = true;
}
function showWaiting() {
  const now = performance.now();
  if (reconnecting) {
    waitingText.textContent = `Connection lost; reconnecting (${reconnecting.attempt} of ${reconnecting.of})…`;
    waiting.hidden = false;
    return;
  }
  if (sawText && now - lastTextAt < SILENCE_MS) {
    waiting.hidden = true;
    return;
  }
  const seconds = Math.floor((now - (sawText ? lastTextAt : startedAt)) / 1000);
  waitingText.textContent = sawText
    ? `The model paused… ${seconds} s`
    : `Waiting for the first words… ${seconds} s`;
  waiting.hidden = false;
}
function stopWaiting() {
  clearInterval(waitTimer);
  waitTimer = 0;
  waiting.hidden = true;
}

function characters(text) {
  return [...text].length; // code points, as the service counts them
}
function overLimit(used) {
  const over = used - maxChars;
  return `${over} character${over === 1 ? "" : "s"} over the limit of ${maxChars}.`;
}
// Inline validation: a blank question is reported when it is asked, a long
// one as soon as it is typed; either clears once the question is fixed.
function updateCounter() {
  const used = characters(question.value);
  counter.textContent = maxChars === null ? "" : `${used} / ${maxChars}`;
  const over = maxChars !== null && used > maxChars;
  counter.classList.toggle("over", over);
  if (over) showProblem("long", overLimit(used));
  else if (problem.dataset.kind === "long" || question.value.trim()) clearProblem();
}
function showProblem(kind, text) {
  problem.dataset.kind = kind;
  problem.textContent = text;
  problem.hidden = false;
  question.setAttribute("aria-invalid", "true");
}
function clearProblem() {
  delete problem.dataset.kind;
  problem.textContent = "";
  problem.hidden = true;
  question.removeAttribute("aria-invalid");
}
function checkQuestion(query) {
  if (!query.trim()) showProblem("blank", "Type a question first.");
  else if (maxChars !== null && characters(query) > maxChars) {
    showProblem("long", overLimit(characters(query)));
  } else return true;
  return false;
}

function setBusy(busy) {
  askButton.disabled = busy;
  stopButton.disabled = !busy;
}

function showError(error, _text, requestId) {
  errorTitle.textContent = FRIENDLY[error.code] ?? "Something went wrong.";
  errorMessage.textContent = error.message;
  errorCode.textContent = error.code;
  errorRequestId.textContent = requestId ?? "";
  errorRequest.hidden = !requestId;
  copyButton.textContent = "Copy";
  retryButton.hidden = !error.retryable;
  errorBox.hidden = false;
}

async function copyRequestId() {
  const id = errorRequestId.textContent;
  try {
    await navigator.clipboard.writeText(id);
    copyButton.textContent = "Copied";
  } catch {
    // No clipboard (a plain-http origin that is not localhost): select it instead.
    getSelection().selectAllChildren(errorRequestId);
    copyButton.textContent = "Selected: press Ctrl+C";
  }
}

// The API key, for this tab only. Storage can be off (some private modes).
const KEY_STORAGE = "qa-service.api-key";
function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || undefined;
  } catch {
    return undefined;
  }
}
function storeKey(key) {
  try {
    sessionStorage.setItem(KEY_STORAGE, key);
  } catch {
    // Not kept: it still works for this question.
  }
}
let typedKey; // used when storage is off
function askForKey() {
  keyHelp.textContent = (storedKey() ?? typedKey)
    ? "The service refused that key. Enter another one."
    : "This service needs an API key. It is kept in this tab only (sessionStorage) and sent with each question.";
  keyForm.hidden = false;
  keyInput.focus();
}
keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (!key) return keyInput.focus();
  typedKey = key;
  storeKey(key);
  keyInput.value = "";
  keyForm.hidden = true;
  if (lastRequest) ask(lastRequest);
});

const RETRIES = 5; // qa-client.js's default, said here to show "n of 5"

// A new question gets a new turn at the end of the thread; Try again and a
// new key ask again in the same turn, with the same history.
function askNew(request) {
  current?.abort();
  // The error box moves on to the new turn: a failed turn keeps a line saying why.
  const previous = thread.last;
  if (previous?.status === "failed") {
    previous.stats.textContent = FRIENDLY[previous.error.code] ?? "The answer failed.";
  }
  threadSection.hidden = false;
  const turn = thread.add(request.query);
  question.placeholder = "Ask a follow-up question";
  turn.element.scrollIntoView({ block: "nearest" });
  return ask({ ...request, turn });
}

async function ask(request) {
  current?.abort();
  lastRequest = request;
  const { turn } = request;
  turn.restart();
  turn.element.append(errorBox);
  errorBox.hidden = true;
  setBusy(true);
  startWaiting();
  const handle = startAnswer(request.query, {
    apiKey: storedKey() ?? typedKey,
    prompt: request.prompt,
    scenario: request.scenario,
    history: thread.historyBefore(turn),
    retries: RETRIES,
    onReconnect({ attempt }) {
      reconnecting = { attempt, of: RETRIES };
      showWaiting();
    },
    onMeta(info) {
      turn.meta.textContent = `${info.provider} · ${info.model} · prompt "${info.prompt}"`;
    },
    onText(piece) {
      noteText();
      turn.append(piece);
    },
    onDone(done) {
      const usage = done.usage
        ? `${done.usage.input_tokens} in / ${done.usage.output_tokens} out tokens`
        : "usage not reported";
      const ttft = done.ttft_ms === null ? "no text" : `first text after ${Math.round(done.ttft_ms)} ms`;
      turn.stats.textContent = `${ttft} · ${usage} · finished: ${done.finish_reason}`;
    },
    onError(error, text, requestId) {
      turn.error = error;
      showError(error, text, requestId);
      if (error.code === "unauthorized") askForKey();
    },
  });
  current = handle;
  turn.handle = handle;
  const result = await handle.result;
  // Unless the turn was asked again meanwhile (Try again, a new key), this try was its end.
  if (turn.handle === handle) {
    turn.end({ done: "done", aborted: "stopped" }[result.status] ?? "failed");
    if (result.status === "aborted") turn.stats.textContent = "Stopped.";
  }
  if (current !== handle) return; // a newer question took over the page
  current = null;
  stopWaiting();
  setBusy(false);
}

// Stops the answer being written (and cancels it on the service), then empties the thread.
function newConversation() {
  current?.abort();
  current = null;
  stopWaiting();
  setBusy(false);
  errorBox.hidden = true;
  document.querySelector("main").append(errorBox);
  thread.clear();
  threadSection.hidden = true;
  lastRequest = null;
  question.placeholder = FIRST_PLACEHOLDER;
  question.focus();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const query = question.value;
  if (!checkQuestion(query)) {
    question.focus();
    return;
  }
  clearProblem();
  question.value = "";
  updateCounter();
  askNew({ query, prompt: promptSelect.value || undefined, scenario: scenarioSelect.value || undefined });
});
question.addEventListener("input", updateCounter);
question.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") current?.abort();
});
// Stop aborts the stream and asks the service to cancel the answer.
stopButton.addEventListener("click", () => current?.abort());
// A closing tab cannot wait for a fetch: the cancel goes as a beacon. Without
// it the service would keep the answer going for its resume grace period.
addEventListener("pagehide", () => current?.abort({ beacon: true }));
retryButton.addEventListener("click", () => lastRequest && ask(lastRequest));
copyButton.addEventListener("click", copyRequestId);
newConversationButton.addEventListener("click", newConversation);

function showService(ready) {
  provider.replaceChildren("Answering with ", strong(ready.provider), " · ", strong(ready.model));
  if (ready.notice) notice.textContent = ready.notice;
  notice.hidden = !ready.notice;
  maxChars = ready.max_query_chars;
  scenarioSelect.replaceChildren(
    ...(ready.scenarios ?? []).map((name) => new Option(name.replaceAll("_", " "), name)),
  );
  scenarioField.hidden = !ready.scenarios;
  updateCounter();
}
function strong(text) {
  const element = document.createElement("strong");
  element.textContent = text;
  return element;
}

async function loadPrompts() {
  const prompts = await fetch("/prompts").then((r) => (r.ok ? r.json() : Promise.reject(r)));
  promptSelect.replaceChildren(
    ...prompts.prompts.map(({ name, description }) => {
      const option = new Option(name, name, false, name === prompts.default);
      option.title = description;
      return option;
    }),
  );
}

// Until the service says it is ready, say so, and ask again every 2 s.
async function loadService() {
  try {
    const response = await fetch("/readyz", { cache: "no-store" });
    if (!response.ok) throw new Error(`readyz ${response.status}`);
    showService(await response.json());
    await loadPrompts();
  } catch {
    provider.textContent = "The service is not ready yet; trying again…";
    setTimeout(loadService, 2000);
  }
}

updateCounter();
loadService();
question.focus();
