// The demo page: streams an answer into the page with qa-client.js.
import { streamAnswer } from "/qa-client.js";

const $ = (id) => document.getElementById(id);
const form = $("ask-form");
const question = $("question");
const askButton = $("ask");
const stopButton = $("stop");
const answer = $("answer");
const meta = $("meta");
const stats = $("stats");
const notice = $("notice");
const errorBox = $("error");
const errorMessage = $("error-message");
const retryButton = $("retry");
const promptSelect = $("prompt");
const scenarioField = $("scenario-field");
const scenarioSelect = $("scenario");

let controller = null;
let lastRequest = null;

// Text arrives faster than the screen refreshes: pieces are batched and
// appended once per animation frame, as a text node, so markup in model
// output is shown literally and never parsed.
let pending = "";
let frame = 0;
function queueText(piece) {
  pending += piece;
  if (!frame) frame = requestAnimationFrame(flushText);
}
function flushText() {
  if (frame) cancelAnimationFrame(frame);
  frame = 0;
  if (pending) answer.append(document.createTextNode(pending));
  pending = "";
}

function setBusy(busy) {
  askButton.disabled = busy;
  stopButton.disabled = !busy;
  answer.setAttribute("aria-busy", String(busy));
}

function showError(error) {
  errorMessage.textContent = `${error.message} (${error.code})`;
  retryButton.hidden = !error.retryable;
  errorBox.hidden = false;
}

async function ask(request) {
  controller?.abort();
  controller = new AbortController();
  lastRequest = request;
  answer.textContent = "";
  meta.textContent = "";
  stats.textContent = "";
  errorBox.hidden = true;
  setBusy(true);
  const result = await streamAnswer(request.query, {
    prompt: request.prompt,
    scenario: request.scenario,
    signal: controller.signal,
    onMeta(info) {
      meta.textContent = `${info.provider} · ${info.model} · prompt "${info.prompt}"`;
      if (info.notice) {
        notice.textContent = info.notice;
        notice.hidden = false;
      }
    },
    onText: queueText,
    onDone(done) {
      const usage = done.usage
        ? `${done.usage.input_tokens} in / ${done.usage.output_tokens} out tokens`
        : "usage not reported";
      const ttft = done.ttft_ms === null ? "no text" : `first text after ${Math.round(done.ttft_ms)} ms`;
      stats.textContent = `${ttft} · ${usage} · finished: ${done.finish_reason}`;
    },
    onError: showError,
  });
  flushText();
  setBusy(false);
  if (result.status === "aborted") stats.textContent = "Stopped.";
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const query = question.value;
  if (!query.trim()) {
    question.focus();
    return;
  }
  ask({ query, prompt: promptSelect.value || undefined, scenario: scenarioSelect.value || undefined });
});
question.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && controller) controller.abort();
});
stopButton.addEventListener("click", () => controller?.abort());
retryButton.addEventListener("click", () => lastRequest && ask(lastRequest));

async function loadOptions() {
  const [prompts, ready] = await Promise.all([
    fetch("/prompts").then((r) => r.json()),
    fetch("/readyz").then((r) => r.json()),
  ]);
  for (const { name, description } of prompts.prompts) {
    const option = new Option(name, name, false, name === prompts.default);
    option.title = description;
    promptSelect.append(option);
  }
  scenarioField.hidden = ready.provider !== "demo";
}
loadOptions().catch(() => {
  meta.textContent = "The service is not ready yet; asking still works once it is.";
});
question.focus();
