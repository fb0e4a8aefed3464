// Model output rendered as Markdown, with nothing in it able to run or to reach out.
//
// - Raw HTML is off (html: false): markdown-it escapes every tag in the text,
//   so `<script>` or `<img onerror>` is shown as text. No sanitizer is added on
//   top: with HTML off markdown-it only ever emits its own tags, and the page's
//   CSP (script-src 'self', no inline handlers) would stop a handler anyway.
// - Links go only to http, https and mailto (markdown-it's own check allows any
//   scheme but a short deny list); any other link, `javascript:` included, stays
//   text. They open in a new tab with no opener and no referrer.
// - Images are off: an answer must not make the browser fetch a URL by itself
//   (an image address can carry the conversation to another site). `![a](u)`
//   shows as "!" and a link to u.
// - Newlines inside a paragraph are kept (breaks: true), as the plain-text page
//   showed them: models often write lines that are not Markdown paragraphs.
import markdownit from "/static/vendor/markdown-it.min.js";

const SAFE_LINK = /^(?:https?|mailto):/i;

const md = markdownit({ html: false, breaks: true, linkify: false, typographer: false });
md.validateLink = (url) => SAFE_LINK.test(url.trim());
md.disable("image");

const renderToken = (tokens, index, options, _env, renderer) =>
  renderer.renderToken(tokens, index, options);
const renderLinkOpen = md.renderer.rules.link_open ?? renderToken;
md.renderer.rules.link_open = (tokens, index, options, env, renderer) => {
  tokens[index].attrSet("target", "_blank");
  tokens[index].attrSet("rel", "noopener noreferrer");
  return renderLinkOpen(tokens, index, options, env, renderer);
};

/** Show `source` (the Markdown so far) in `element`, replacing what it showed. */
export function renderMarkdown(element, source) {
  // markdown-it's HTML, with raw HTML off, holds only its own tags (see above).
  element.innerHTML = md.render(source);
}
