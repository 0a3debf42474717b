// A tiny, safe markdown renderer: the text is HTML-escaped first, then a small subset
// (headings, lists, code, bold, italics, tables as preformatted text) is turned into tags.
(function () {
  function escapeHtml(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
            .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }
  function inline(s) {
    return s.replace(/`([^`]+)`/g, "<code>$1</code>")
            .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
            .replace(/(^|[^*])\*([^*\s][^*]*)\*/g, "$1<em>$2</em>");
  }
  function render(md) {
    const lines = escapeHtml(md).split("\n");
    let out = [], list = null, code = false;
    const closeList = () => { if (list) { out.push("</" + list + ">"); list = null; } };
    for (const line of lines) {
      if (/^```/.test(line)) { closeList(); out.push(code ? "</pre>" : "<pre>"); code = !code; continue; }
      if (code) { out.push(line + "\n"); continue; }
      let m;
      if ((m = /^(#{1,4})\s+(.*)$/.exec(line))) { closeList(); const n = m[1].length + 2; out.push(`<h${n}>${inline(m[2])}</h${n}>`); }
      else if ((m = /^\s*[-*]\s+(.*)$/.exec(line))) { if (list !== "ul") { closeList(); out.push("<ul>"); list = "ul"; } out.push(`<li>${inline(m[1])}</li>`); }
      else if ((m = /^\s*\d+[.)]\s+(.*)$/.exec(line))) { if (list !== "ol") { closeList(); out.push("<ol>"); list = "ol"; } out.push(`<li>${inline(m[1])}</li>`); }
      else if (line.trim() === "") { closeList(); out.push("<br>"); }
      else { closeList(); out.push(`<p>${inline(line)}</p>`); }
    }
    closeList();
    if (code) out.push("</pre>");
    return out.join("");
  }
  window.renderMarkdown = render;
  window.escapeHtml = escapeHtml;
})();
