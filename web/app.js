// Store-staff UI: photo + preset prompt -> streamed answer (OpenAI API, SSE), timings, history;
// and a monitoring page drawn from /metrics. No external resources: works offline.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const PRESETS = {
    shelf: "Describe the shelf display in this photo: product categories, brands, how full the shelf is, and anything that looks out of place.",
    oos: "Find out-of-stock gaps on this shelf and count the facings of each visible product. Answer as a list: product - facings - gap yes/no.",
    price: "Read every price tag and promotion sign in this photo. For each: product name, regular price, promo price and promo conditions.",
    planogram: "Check this shelf against a tidy planogram: are products grouped by brand, labels facing forward, price tags aligned with products? List the problems found.",
    hygiene: "Inspect this kitchen photo for hygiene issues: cleanliness of surfaces, food storage, protective clothing, cross-contamination risks. List findings by severity.",
    plating: "Assess the dish in this photo: portion size, plating and presentation, and whether it looks consistent with a standard serving.",
    menu: "Read the menu or receipt in this photo. List each item with its price, then give the total if there is one.",
  };
  // JSON schemas of the presets whose answer is data ("Structured answer"): the server decodes
  // under the schema, so the answer always parses unless cut by max tokens. Every property is
  // required so that a table can rely on its columns.
  const CURRENCY = { type: "string", enum: ["EUR", "USD", "GBP", "CHF", "CNY", "JPY", "KRW", "INR", "CAD", "AUD",
                                           "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "RON", "TRY", "BRL", "MXN"] };
  const strict = (properties) => ({ type: "object", additionalProperties: false, properties, required: Object.keys(properties) });
  const SCHEMAS = {
    price: { name: "price_tags", schema: strict({
      tags: { type: "array", maxItems: 50, items: strict({
        product: { type: "string" }, price: { type: "number" }, currency: CURRENCY,
        unit: { type: ["string", "null"] }, on_promotion: { type: "boolean" }, promo_text: { type: ["string", "null"] },
      }) },
    }) },
    menu: { name: "receipt", schema: strict({
      merchant: { type: ["string", "null"] }, date: { type: ["string", "null"] },
      items: { type: "array", maxItems: 100, items: strict({ name: { type: "string" }, quantity: { type: "number" }, price: { type: "number" } }) },
      total: { type: ["number", "null"] }, currency: CURRENCY,
    }) },
    oos: { name: "facing_count", schema: strict({
      items: { type: "array", maxItems: 100, items: strict({ product: { type: "string" }, facings: { type: "integer" }, out_of_stock: { type: "boolean" } }) },
    }) },
  };
  let info = {}, imageDataUrl = null, controller = null, history = [], preset = null;

  // ---- tabs ----
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => {
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === b));
    $("view-ask").hidden = b.dataset.view !== "ask";
    $("view-monitor").hidden = b.dataset.view !== "monitor";
    if (b.dataset.view === "monitor") pollMetrics();
  }));

  // ---- model info ----
  async function loadInfo() {
    try {
      const r = await fetch("/info");
      info = await r.json();
    } catch (e) { info = {}; }
    if (!info.ready) {
      $("model-line").textContent = "Model loading…";
      setTimeout(loadInfo, 1000);
      return;
    }
    $("model-line").textContent = `Model: ${info.model} (${info.device})` + (info.demo ? " — built-in demo model" : "");
    $("demo-banner").hidden = !info.demo;
    $("key-label").hidden = !info.auth;
  }
  $("api-key").value = localStorage.getItem("ost-api-key") || "";
  $("api-key").addEventListener("change", () => localStorage.setItem("ost-api-key", $("api-key").value));

  // ---- image input ----
  function setImage(file) {
    if (!file || !file.type.startsWith("image/")) return;
    const reader = new FileReader();
    reader.onload = () => {
      imageDataUrl = reader.result;
      $("preview").src = imageDataUrl;
      $("preview").hidden = false;
      $("drop-text").textContent = file.name;
    };
    reader.readAsDataURL(file);
  }
  $("file").addEventListener("change", (e) => setImage(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); setImage(e.dataTransfer.files[0]); });

  document.querySelectorAll(".preset").forEach((b) => b.addEventListener("click", () => {
    document.querySelectorAll(".preset").forEach((p) => p.classList.toggle("active", p === b));
    preset = b.dataset.preset;
    $("prompt").value = PRESETS[preset];
    const form = SCHEMAS[preset];
    $("structured").disabled = !form;
    if (!form) $("structured").checked = false;
    $("structured-hint").textContent = form ? `The answer is JSON in the "${form.name}" form.`
                                            : "Pick a preset with a form: out-of-stock, price tag or menu & receipt.";
  }));
  $("quick-look").checked = localStorage.getItem("ost-quick-look") === "1";
  $("quick-look").addEventListener("change", () => localStorage.setItem("ost-quick-look", $("quick-look").checked ? "1" : "0"));

  // ---- asking ----
  function headers() {
    const h = { "Content-Type": "application/json" };
    const k = $("api-key").value;
    if (k) h["Authorization"] = "Bearer " + k;
    return h;
  }
  function showError(msg) {
    $("answer").classList.add("error");
    $("answer").textContent = msg;
  }
  // The shape of a schema in one line, e.g. {merchant, items: [{name, price}], total}: told to
  // the model so that it knows what the fields mean (the server enforces the form either way).
  function shape(schema) {
    if (schema.type === "array") return `[${shape(schema.items)}]`;
    if (schema.type !== "object") return "";
    return "{" + Object.entries(schema.properties).map(([k, v]) => {
      const sub = shape(v);
      return sub ? `${k}: ${sub}` : k;
    }).join(", ") + "}";
  }

  // ---- structured answers ----
  // An answer that parsed: pretty-printed JSON, a table of each list of records (and of the
  // top-level plain fields), and a copy button.
  function cell(v) {
    if (v === null) return "—";
    return typeof v === "object" ? JSON.stringify(v) : String(v);
  }
  function table(rows, cols, caption) {
    return `<div class="table-wrap"><table class="data"><caption>${escapeHtml(caption)}</caption><thead><tr>` +
      cols.map((c) => `<th scope="col">${escapeHtml(c)}</th>`).join("") + "</tr></thead><tbody>" +
      rows.map((r) => "<tr>" + r.map((v) => `<td>${escapeHtml(cell(v))}</td>`).join("") + "</tr>").join("") +
      "</tbody></table></div>";
  }
  function records(list) {
    if (!Array.isArray(list) || !list.length || !list.every((x) => x && typeof x === "object" && !Array.isArray(x))) return null;
    const cols = [...new Set(list.flatMap((x) => Object.keys(x)))];
    return { cols, rows: list.map((x) => cols.map((c) => (c in x ? x[c] : null))) };
  }
  function renderJson(text, finish) {
    let value;
    try { value = JSON.parse(text); } catch (e) {
      const why = finish === "length" ? "it was cut at the token limit (raise Max tokens and ask again)"
                                      : finish === "stopped" ? "it was stopped before the end" : "it is not complete JSON";
      return `<p class="json-note error">The structured answer could not be read: ${why}. Raw text:</p>` +
             `<pre class="json-raw">${escapeHtml(text)}</pre>`;
    }
    let html = "";
    const top = records(value);
    if (top) html += table(top.rows, top.cols, "Items");
    if (value && typeof value === "object" && !Array.isArray(value)) {
      const plain = Object.entries(value).filter(([, v]) => !records(v));
      if (plain.length) html += table(plain, ["Field", "Value"], "Fields");
      for (const [k, v] of Object.entries(value)) {
        const r = records(v);
        if (r) html += table(r.rows, r.cols, k);
      }
    }
    if (info.demo) html += '<p class="json-note">Demo model: the JSON is valid, its values are noise.</p>';
    return html + '<div class="row"><button type="button" class="copy-json">Copy JSON</button><span class="copied" role="status"></span></div>' +
           `<pre class="json" id="json-out">${escapeHtml(JSON.stringify(value, null, 2))}</pre>`;
  }
  async function copyText(text) {
    try { await navigator.clipboard.writeText(text); return true; } catch (e) { /* plain http on a LAN address: no clipboard API */ }
    const ta = document.createElement("textarea");
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    const ok = document.execCommand("copy");
    ta.remove();
    return ok;
  }
  $("answer").addEventListener("click", async (e) => {
    if (!e.target.classList.contains("copy-json")) return;
    const ok = await copyText($("json-out").textContent);
    e.target.nextElementSibling.textContent = ok ? "Copied" : "Copy failed: select the JSON below";
  });
  function showAnswer(text, json, finish) {
    $("answer").classList.remove("error");
    $("answer").innerHTML = json ? renderJson(text, finish) : renderMarkdown(text);
  }

  async function ask() {
    const prompt = $("prompt").value.trim();
    if (!prompt) { $("prompt").focus(); return; }
    const form = !$("structured").disabled && $("structured").checked ? SCHEMAS[preset] : null;
    const quick = $("quick-look").checked;
    const content = [];
    if (imageDataUrl) content.push({ type: "image_url", image_url: quick ? { url: imageDataUrl, detail: "low" } : { url: imageDataUrl } });
    content.push({ type: "text", text: form ? `${prompt}\n\nAnswer only with JSON of this shape: ${shape(form.schema)}` : prompt });
    const body = {
      model: info.model, stream: true, stream_options: { include_usage: true },
      messages: [{ role: "user", content }],
      max_tokens: parseInt($("max-tokens").value, 10) || 256,
      temperature: parseFloat($("temperature").value) || 0,
    };
    if (form) body.response_format = { type: "json_schema", json_schema: { name: form.name, strict: true, schema: form.schema } };
    $("answer").classList.remove("error");
    $("answer").classList.toggle("raw", !!form);
    $("answer").innerHTML = "";
    $("timings").textContent = "waiting…";
    $("send").disabled = true;
    $("stop").disabled = false;
    controller = new AbortController();
    const t0 = performance.now();
    let tFirst = 0, text = "", usage = null, finish = null, chunks = 0;
    try {
      const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal });
      if (!r.ok) {
        let msg = `HTTP ${r.status}`;
        try { msg += ": " + (await r.json()).error.message; } catch (e) { /* not JSON */ }
        showError(msg);
        $("timings").textContent = "";
        return;
      }
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (!ev.startsWith("data: ")) continue;
          const data = ev.slice(6);
          if (data === "[DONE]") continue;
          const j = JSON.parse(data);
          if (j.error) { showError(j.error.message); continue; }
          if (j.usage) usage = j.usage;
          const ch = j.choices && j.choices[0];
          if (!ch) continue;
          if (ch.finish_reason) finish = ch.finish_reason;
          if (ch.delta && ch.delta.content) {
            if (!tFirst) tFirst = performance.now();
            chunks++;
            text += ch.delta.content;
            if (form) $("answer").textContent = text;  // raw while streaming, rendered when done
            else $("answer").innerHTML = renderMarkdown(text);
          }
        }
      }
      if (form && !$("answer").classList.contains("error")) showAnswer(text, true, finish);
    } catch (e) {
      if (e.name !== "AbortError") showError(String(e));
      finish = finish || "stopped";
      if (form && e.name === "AbortError") showAnswer(text, true, finish);
    } finally {
      $("answer").classList.remove("raw");
      $("send").disabled = false;
      $("stop").disabled = true;
      controller = null;
    }
    const tEnd = performance.now();
    const ntok = usage ? usage.completion_tokens : chunks;
    const ttft = tFirst ? (tFirst - t0) / 1000 : 0;
    const tps = tFirst && ntok > 1 ? (ntok - 1) / ((tEnd - tFirst) / 1000) : 0;
    $("timings").textContent = `TTFT ${ttft.toFixed(2)} s · ${tps.toFixed(1)} tokens/s · ${ntok} tokens` +
      (usage ? ` · prompt ${usage.prompt_tokens} tokens` : "") + (quick && imageDataUrl ? " (quick look)" : "") +
      (form ? " · JSON" : "") + (finish ? ` · ${finish}` : "");
    history.unshift({ prompt, text, json: !!form, finish, timings: $("timings").textContent, image: !!imageDataUrl, at: new Date().toLocaleTimeString() });
    history = history.slice(0, 50);
    try { sessionStorage.setItem("ost-history", JSON.stringify(history)); } catch (e) { /* full */ }
    drawHistory();
  }
  function drawHistory() {
    const ol = $("history");
    ol.innerHTML = "";
    history.forEach((h) => {
      const li = document.createElement("li");
      li.innerHTML = `<div>${escapeHtml(h.prompt.slice(0, 90))}${h.image ? " 📷" : ""}</div><div class="meta">${escapeHtml(h.at + " · " + h.timings)}</div>`;
      li.addEventListener("click", () => { $("prompt").value = h.prompt; showAnswer(h.text, h.json, h.finish); $("timings").textContent = h.timings; });
      ol.appendChild(li);
    });
  }
  $("send").addEventListener("click", ask);
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) ask(); });
  try { history = JSON.parse(sessionStorage.getItem("ost-history") || "[]"); } catch (e) { history = []; }
  drawHistory();

  // ---- monitoring ----
  function parseMetrics(text) {
    const m = {};
    for (const line of text.split("\n")) {
      if (!line || line[0] === "#") continue;
      const sp = line.lastIndexOf(" ");
      m[line.slice(0, sp)] = parseFloat(line.slice(sp + 1));
    }
    return m;
  }
  function quantile(m, name, q) {
    const b = [];
    for (const k in m) {
      const r = new RegExp("^" + name + '_bucket\\{le="([^"]+)"\\}$').exec(k);
      if (r) b.push([r[1] === "+Inf" ? Infinity : parseFloat(r[1]), m[k]]);
    }
    b.sort((x, y) => x[0] - y[0]);
    const total = b.length ? b[b.length - 1][1] : 0;
    if (!total) return 0;
    let prevLe = 0, prevC = 0;
    for (const [le, c] of b) {
      if (c >= q * total) {
        if (le === Infinity) return prevLe;
        return prevLe + (le - prevLe) * ((q * total - prevC) / Math.max(c - prevC, 1));
      }
      prevLe = le; prevC = c;
    }
    return prevLe;
  }
  const series = { tps: [], ttft50: [], ttft95: [], itl50: [], itl95: [], queue: [], running: [], kv: [] };
  let last = null, timer = null;
  function push(name, v) { series[name].push(v); if (series[name].length > 120) series[name].shift(); }
  function chart(id, lines, fixedMax) {
    const c = $(id), g = c.getContext("2d");
    g.clearRect(0, 0, c.width, c.height);
    let max = fixedMax || 0;
    lines.forEach((l) => l.data.forEach((v) => { if (v > max) max = v; }));
    if (!max) max = 1;
    g.strokeStyle = "#ddd"; g.beginPath();
    for (let i = 0; i <= 4; i++) { const y = 10 + i * (c.height - 20) / 4; g.moveTo(30, y); g.lineTo(c.width, y); }
    g.stroke();
    g.fillStyle = "#666"; g.font = "10px sans-serif";
    g.fillText(max.toPrecision(3), 0, 14); g.fillText("0", 0, c.height - 10);
    lines.forEach((l) => {
      g.strokeStyle = l.color; g.lineWidth = 2; g.beginPath();
      l.data.forEach((v, i) => {
        const x = 30 + i * (c.width - 30) / 119, y = c.height - 10 - (v / max) * (c.height - 20);
        i ? g.lineTo(x, y) : g.moveTo(x, y);
      });
      g.stroke();
    });
    lines.forEach((l, i) => { g.fillStyle = l.color; g.fillText(l.label, 40 + i * 80, 10); });
  }
  async function pollMetrics() {
    clearTimeout(timer);
    if ($("view-monitor").hidden) return;
    try {
      const m = parseMetrics(await (await fetch("/metrics")).text());
      const now = performance.now();
      const gen = m["ost_generation_tokens_total"] || 0;
      push("tps", last ? Math.max(0, (gen - last.gen) / ((now - last.t) / 1000)) : 0);
      last = { gen, t: now };
      push("ttft50", quantile(m, "ost_time_to_first_token_seconds", 0.5));
      push("ttft95", quantile(m, "ost_time_to_first_token_seconds", 0.95));
      push("itl50", quantile(m, "ost_inter_token_seconds", 0.5));
      push("itl95", quantile(m, "ost_inter_token_seconds", 0.95));
      push("queue", m["ost_queue_waiting"] || 0);
      push("running", m["ost_batch_running"] || 0);
      const total = m["ost_kv_blocks_total"] || 1;
      push("kv", 100 * (m["ost_kv_blocks_used"] || 0) / total);
      chart("c-tps", [{ data: series.tps, color: "#1f7a4d", label: "tokens/s" }]);
      chart("c-lat", [{ data: series.ttft50, color: "#1f3a5f", label: "TTFT p50" }, { data: series.ttft95, color: "#7aa0d0", label: "TTFT p95" },
                      { data: series.itl50, color: "#b5541c", label: "ITL p50" }, { data: series.itl95, color: "#e0a070", label: "ITL p95" }]);
      chart("c-queue", [{ data: series.queue, color: "#a01818", label: "waiting" }, { data: series.running, color: "#1f3a5f", label: "running" }]);
      chart("c-kv", [{ data: series.kv, color: "#6a3d9a", label: "KV used %" }], 100);
      const rows = [
        ["Requests answered (200)", m['ost_requests_total{route="/v1/chat/completions",status="200"}'] || 0],
        ["Prompt tokens", m["ost_prompt_tokens_total"] || 0], ["Generated tokens", gen],
        ["Prefix cache hit rate", ((m["ost_prefix_cache_hit_rate"] || 0) * 100).toFixed(1) + " %"],
        ["Image cache hit rate", ((m["ost_image_cache_hit_rate"] || 0) * 100).toFixed(1) + " %"],
        ["KV blocks used / total", `${m["ost_kv_blocks_used"] || 0} / ${total}`],
        ["Preemptions", m["ost_preemptions_total"] || 0],
        ["Client disconnects", m["ost_client_disconnects_total"] || 0],
      ];
      $("stats").innerHTML = rows.map((r) => `<tr><td>${escapeHtml(r[0])}</td><td>${escapeHtml(String(r[1]))}</td></tr>`).join("");
    } catch (e) { /* server restarting */ }
    timer = setTimeout(pollMetrics, 2000);
  }

  loadInfo();
})();
