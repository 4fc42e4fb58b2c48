// The one renderer for model output (chat answers, arena answers): MedPortalMarkdown.render(el, text).
//
// Model text is untrusted. It may only use the markdown a clinician needs: paragraphs, emphasis,
// lists, headings, quotes, code, tables and links. Raw HTML in the text is shown as text; an
// image is never loaded (it becomes a link to its address); forms, inputs, iframes, styles, SVG
// and every attribute but a link's address are dropped by DOMPurify's allow-list. Links open in a
// new tab, without referrer or opener, and carry the "external-link" mark.
// Needs marked and DOMPurify loaded first; without them the text is shown as it is.
(function () {
  "use strict";

  var ALLOWED_TAGS = [
    "p", "br", "hr", "strong", "b", "em", "i", "del", "s", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td", "a", "sup", "sub", "kbd",
  ];
  var ALLOWED_ATTR = ["href", "title", "start", "colspan", "rowspan", "align"];
  var SAFE_URL = /^(?:https?:|mailto:)/i;

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  var parser = null;
  function markdown() {
    if (parser) return parser;
    parser = new window.marked.Marked({ gfm: true, breaks: true });
    parser.use({
      renderer: {
        // Raw HTML written by the model is shown, not interpreted.
        html: function (token) { return escapeHtml(token.text); },
        // No image is fetched: a link to it instead (sanitised like any other link).
        image: function (token) {
          var label = token.text || token.href || "";
          return '<a href="' + escapeHtml(token.href || "") + '">' + escapeHtml(label) + "</a>";
        },
      },
    });
    return parser;
  }

  var sanitising = false;
  var hooked = false;
  function hook() {
    if (hooked) return;
    hooked = true;
    window.DOMPurify.addHook("afterSanitizeAttributes", function (node) {
      if (!sanitising || node.nodeName !== "A") return;
      var href = node.getAttribute("href");
      if (!href || !SAFE_URL.test(href)) {
        node.removeAttribute("href");
        return;
      }
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
      node.setAttribute("title", href);
      node.setAttribute("class", "external-link");
    });
  }

  function toHtml(text) {
    hook();
    sanitising = true;
    try {
      return window.DOMPurify.sanitize(markdown().parse(String(text)), {
        ALLOWED_TAGS: ALLOWED_TAGS,
        ALLOWED_ATTR: ALLOWED_ATTR,
        ALLOWED_URI_REGEXP: SAFE_URL,
        ALLOW_DATA_ATTR: false,
        ALLOW_ARIA_ATTR: false,
        KEEP_CONTENT: true,
      });
    } finally {
      sanitising = false;
    }
  }

  function render(el, text) {
    if (window.marked && window.marked.Marked && window.DOMPurify && window.DOMPurify.isSupported) {
      el.style.whiteSpace = "normal";
      el.innerHTML = toHtml(text);
    } else {
      el.textContent = text;
    }
  }

  window.MedPortalMarkdown = { render: render, toHtml: toHtml };
})();
