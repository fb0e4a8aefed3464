// The conversation on the page: its turns (a question and its answer each),
// what is sent as history with the next question, and each answer's display.
//
// An answer's Markdown source is kept as it arrived; the answer on screen is
// that source rendered again whenever text arrives, at most once per animation
// frame (text comes faster than the screen refreshes), so a list or a code
// block takes shape while it streams.
//
// Only answers that finished go into history. A stopped or failed turn stays
// on screen, marked, but neither its question nor its partial answer is sent:
// a cut-off text given back to the model as its own complete reply would
// mislead it about what it said, and one with no text would be an empty turn.
import { renderMarkdown } from "/static/markdown.js";

const COPIED_MS = 2000;
const COPY_LABEL = "Copy answer";

export class Turn {
  constructor(element, question) {
    this.element = element;
    this.question = question;
    this.source = ""; // the answer's Markdown, exactly as it arrived
    this.status = "running"; // then "done", "stopped" or "failed"
    this.answer = element.querySelector(".answer");
    this.meta = element.querySelector(".meta");
    this.stats = element.querySelector(".stats");
    this.note = element.querySelector(".turn-note");
    this.copyButton = element.querySelector(".copy-answer");
    this.frame = 0;
    this.copiedTimer = 0;
    this.handle = null; // the page's current try at this answer
    this.error = null; // {code, message, retryable} once it failed
    element.querySelector(".question-text").textContent = question;
    this.copyButton.addEventListener("click", () => this.copy());
  }

  /** Clear the answer for another try at the same question. */
  restart() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.source = "";
    this.status = "running";
    this.error = null;
    this.answer.replaceChildren();
    this.answer.setAttribute("aria-busy", "true");
    this.meta.textContent = "";
    this.stats.textContent = "";
    this.note.hidden = true;
    this.copyButton.hidden = true;
  }

  append(piece) {
    this.source += piece;
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    renderMarkdown(this.answer, this.source);
  }

  /** The end of this answer: "done", "stopped" or "failed". */
  end(status) {
    this.status = status;
    this.render();
    this.answer.setAttribute("aria-busy", "false");
    this.copyButton.hidden = this.source === "";
    this.note.hidden = status === "done";
  }

  async copy() {
    try {
      await navigator.clipboard.writeText(this.source);
      this.copyButton.textContent = "Copied";
    } catch {
      // No clipboard (a plain-http origin that is not localhost): select it instead.
      getSelection().selectAllChildren(this.answer);
      this.copyButton.textContent = "Selected: press Ctrl+C";
    }
    clearTimeout(this.copiedTimer);
    this.copiedTimer = setTimeout(() => (this.copyButton.textContent = COPY_LABEL), COPIED_MS);
  }
}

export class Thread {
  /** `list`: the element the turns go in; `template`: a <template> of one turn. */
  constructor(list, template) {
    this.list = list;
    this.template = template;
    this.turns = [];
  }

  get last() {
    return this.turns.at(-1);
  }

  /**
   * A new turn at the end. Its parts take the ids the rest of the page (and
   * the screen reader's live region) know, which the earlier turn gives up.
   */
  add(question) {
    const previous = this.turns.at(-1);
    if (previous) release(previous);
    const element = this.template.content.firstElementChild.cloneNode(true);
    const turn = new Turn(element, question);
    turn.answer.id = "answer";
    turn.answer.setAttribute("aria-live", "polite");
    turn.meta.id = "meta";
    turn.stats.id = "stats";
    this.list.append(element);
    this.turns.push(turn);
    return turn;
  }

  clear() {
    for (const turn of this.turns) cancelAnimationFrame(turn.frame);
    this.turns = [];
    this.list.replaceChildren();
  }

  /** The finished turns before `turn` as POST /ai_write's `history`, oldest first. */
  historyBefore(turn) {
    const end = this.turns.indexOf(turn);
    return this.turns
      .slice(0, end === -1 ? undefined : end)
      .filter((earlier) => earlier.status === "done" && earlier.source !== "")
      .flatMap((earlier) => [
        { role: "user", content: earlier.question },
        { role: "assistant", content: earlier.source },
      ]);
  }
}

function release(turn) {
  for (const part of [turn.answer, turn.meta, turn.stats]) part.removeAttribute("id");
  turn.answer.removeAttribute("aria-live");
}
