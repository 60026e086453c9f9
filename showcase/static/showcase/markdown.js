// A model's answer as safe Markdown: window.LuckRigMarkdown.render(text) → a DocumentFragment to append, and
// LuckRigMarkdown.streaming(element) → {add(piece), finish(text)} for an answer that arrives piece by piece.
// The parser is markdown-it (vendor/markdown-it.min.js, MIT), vendored rather than hand-written: Markdown's edge
// cases (nested lists, code fences, emphasis rules, entity handling) are where hand-written renderers grow holes,
// and markdown-it is CommonMark-compliant, widely used, kept up to date and needs no eval (the CSP allows none).
// Its options here: html false (raw HTML in the answer is escaped, shown as text), linkify off (only links the
// text spells out in Markdown), and its link check, which refuses javascript:, vbscript:, file: and data: URLs.
// Then three choices of ours:
//   - no images: a model's answer must not make this browser fetch a URL (a tracking pixel, or a CSP violation
//     for any host but this one); an image is shown as a link with its alt text instead;
//   - links only to http(s) and mailto, opened in a new tab (following one must not end the conversation) with
//     rel="nofollow noopener noreferrer";
//   - tables' alignment becomes a class (markdown-it writes an inline style attribute, which the CSP forbids);
// and, as a second wall, the HTML is parsed into an inert <template> and every element or attribute outside a
// short allowlist is dropped before anything reaches the page.
"use strict";
(function () {
  const md = window.markdownit({ html: false, linkify: false, typographer: false, breaks: false });
  const SAFE_URL = /^(https?:|mailto:)/i;
  const REL = "nofollow noopener noreferrer";

  md.core.ruler.push("luckrig_no_inline_style", (state) => {
    for (const token of state.tokens) {
      if (!token.attrs) continue;
      const style = token.attrGet("style");
      if (style === null) continue;
      token.attrs = token.attrs.filter(([name]) => name !== "style");
      const align = /text-align:(left|right|center)/.exec(style);
      if (align) token.attrJoin("class", "md-align-" + align[1]);
    }
  });

  md.renderer.rules.image = (tokens, idx, options, env, self) => {
    const token = tokens[idx];
    const alt = self.renderInlineAsText(token.children || [], options, env) || token.attrGet("src");
    const src = token.attrGet("src") || "";
    const label = md.utils.escapeHtml("[" + alt + "]");
    return SAFE_URL.test(src) ? '<a href="' + md.utils.escapeHtml(src) + '">' + label + "</a>" : label;
  };

  const ALLOWED = new Set([
    "P", "BR", "HR", "EM", "STRONG", "S", "CODE", "PRE", "BLOCKQUOTE", "UL", "OL", "LI", "A",
    "H1", "H2", "H3", "H4", "H5", "H6", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD",
  ]);
  const ATTRS = { A: ["href"], OL: ["start"], TH: ["class"], TD: ["class"], CODE: ["class"] };

  function clean(root) {
    for (const el of Array.from(root.querySelectorAll("*"))) {
      if (!ALLOWED.has(el.tagName)) { el.replaceWith(document.createTextNode(el.textContent)); continue; }
      const keep = ATTRS[el.tagName] || [];
      for (const attr of Array.from(el.attributes)) if (!keep.includes(attr.name)) el.removeAttribute(attr.name);
      if (el.tagName === "A") {
        const href = el.getAttribute("href") || "";
        if (SAFE_URL.test(href)) { el.setAttribute("rel", REL); el.setAttribute("target", "_blank"); }
        else el.replaceWith(document.createTextNode(el.textContent));
      }
    }
  }

  function render(text) {
    const template = document.createElement("template");
    template.innerHTML = md.render(String(text || ""));  // inert: a <template>'s content runs nothing
    clean(template.content);
    return template.content;
  }

  // A streamed answer drawn into `out`: re-rendered at most once a frame, so that a long answer stays cheap.
  // add(piece) while pieces arrive; finish(full) draws the whole text at once.
  function streaming(out) {
    let text = "", queued = false;
    const draw = () => { queued = false; out.replaceChildren(render(text)); };
    return {
      add(piece) { text += piece; if (!queued) { queued = true; requestAnimationFrame(draw); } },
      finish(full) { text = full; draw(); },
    };
  }

  window.LuckRigMarkdown = { render, streaming };
})();
