// Browser test of the web UI: starts `ostrakon serve` (the demo model) on a free port, opens
// headless Chromium, uploads a fixture photo, picks a preset, waits for the streamed answer and
// its timings, then checks the monitoring page draws from /metrics; then asks the price-tag preset
// for a structured answer (JSON schema) and checks the rendered JSON, and a quick look (image
// detail "low"). The server caps JSON strings (--json-max-string) so that the demo model's random
// strings cannot run the structured answer past max_tokens.
// Usage: node ui_test.mjs [path/to/ostrakon]   (default: ../../build/bin/ostrakon)
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
const bin = process.argv[2] || process.env.OST_BIN || path.join(repo, "build/bin/ostrakon");
const image = path.join(repo, "tests/data/qwen3vl-tiny/images/shelf_300x200.png");
const cache = mkdtempSync(path.join(tmpdir(), "ost-ui-"));

function fail(msg) {
  console.error("ui_test: FAIL: " + msg);
  process.exitCode = 1;
}

const server = spawn(bin, ["serve", "--port", "0", "--demo-dir", path.join(cache, "demo"),
                           "--tokenizer", path.join(repo, "assets/qwen3/tokenizer.json"), "--json-max-string", "8"],
                     { stdio: ["ignore", "inherit", "pipe"] });
let log = "";
const port = await new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error("server did not start: " + log)), 120000);
  server.stderr.on("data", (d) => {
    log += d;
    process.stderr.write(d);
    const m = /listening on http:\/\/[^:]+:(\d+)\//.exec(log);
    if (m) { clearTimeout(t); resolve(Number(m[1])); }
  });
  server.on("exit", (c) => reject(new Error("server exited " + c + ": " + log)));
});
const base = `http://127.0.0.1:${port}`;
for (let i = 0; i < 600; i++) {  // the demo model is written on first use
  try { if ((await fetch(base + "/health")).ok) break; } catch (e) { /* not yet */ }
  await new Promise((r) => setTimeout(r, 200));
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(base + "/");
  await page.waitForFunction(() => document.getElementById("model-line").textContent.includes("ostrakon-demo-tiny"));
  if (await page.locator("#demo-banner").isHidden()) fail("the demo banner is not shown");
  await page.setInputFiles("#file", image);
  await page.waitForSelector("#preview:not([hidden])");
  await page.click('button[data-preset="oos"]');
  const prompt = await page.inputValue("#prompt");
  if (!prompt.includes("facings")) fail("the preset did not fill the prompt: " + prompt);
  await page.fill("#max-tokens", "16");
  await page.click("#send");
  await page.waitForFunction(() => /TTFT [\d.]+ s · [\d.]+ tokens\/s · 16 tokens/.test(document.getElementById("timings").textContent),
                             null, { timeout: 120000 });
  const answer = await page.textContent("#answer");
  if (!answer.trim()) fail("empty answer");
  const timings = await page.textContent("#timings");
  console.log("ui_test: answer:", JSON.stringify(answer.slice(0, 80)), "|", timings);
  if ((await page.locator("#history li").count()) !== 1) fail("history does not hold the answer");
  // The answer is HTML-escaped: whatever the model said, no element came from it.
  if ((await page.locator("#answer script, #answer img").count()) !== 0) fail("unescaped HTML in the answer");

  await page.click("#tab-monitor");
  await page.waitForFunction(() => document.getElementById("stats").textContent.includes("Generated tokens"), null, { timeout: 10000 });
  const stats = await page.textContent("#stats");
  if (!/Generated tokens\s*16/.test(stats)) fail("monitor stats: " + stats);
  const drawn = await page.evaluate(() => {
    const c = document.getElementById("c-kv");
    return c.getContext("2d").getImageData(0, 0, c.width, c.height).data.some((v) => v !== 0);
  });
  if (!drawn) fail("the KV chart is empty");

  // Structured answer: the toggle needs a preset with a schema.
  await page.click("#tab-ask");
  await page.click('button[data-preset="shelf"]');
  if (!(await page.isDisabled("#structured"))) fail("structured answer is enabled for a preset without a schema");
  await page.click('button[data-preset="price"]');
  if (await page.isDisabled("#structured")) fail("structured answer is disabled for the price-tag preset");
  await page.check("#structured");
  await page.fill("#max-tokens", "400");
  await page.fill("#temperature", "0");
  const sent = [];
  page.on("request", (r) => { if (r.url().endsWith("/v1/chat/completions")) sent.push(JSON.parse(r.postData())); });
  await page.click("#send");
  await page.waitForFunction(() => /· JSON · \w+$/.test(document.getElementById("timings").textContent), null, { timeout: 120000 });
  const rf = sent[0] && sent[0].response_format;
  if (!rf || rf.type !== "json_schema" || rf.json_schema.name !== "price_tags") fail("request without the price-tag schema: " + JSON.stringify(rf));
  const timingsJson = await page.textContent("#timings");
  if (!timingsJson.endsWith("· stop")) fail("structured answer did not end: " + timingsJson);
  const jsonText = await page.textContent("#json-out").catch(() => "");
  let value = null;
  try { value = JSON.parse(jsonText); } catch (e) { fail("the rendered JSON does not parse: " + JSON.stringify(jsonText) + " | " + await page.textContent("#answer")); }
  if (value) {
    console.log("ui_test: structured:", JSON.stringify(value), "|", timingsJson);
    if (!Array.isArray(value.tags)) fail("the JSON has no list of tags");
    const tag = rf.json_schema.schema.properties.tags.items;
    for (const t of value.tags || []) {
      for (const k of tag.required) if (!(k in t)) fail("a tag lacks required key " + k);
      if (typeof t.price !== "number" || typeof t.on_promotion !== "boolean") fail("JSON types do not follow the schema");
      if (!tag.properties.currency.enum.includes(t.currency)) fail("currency outside the enum: " + t.currency);
    }
    const rows = await page.locator("#answer table.data tbody tr").count();
    // A table of the tags, or (no tag read) of the top-level fields.
    if (rows !== Math.max(1, (value.tags || []).length)) fail("no table of the JSON (" + rows + " rows)");
    if (!(await page.textContent("#answer")).includes("values are noise")) fail("no demo-model notice on the JSON answer");
    await page.click("#answer .copy-json");
    await page.waitForFunction(() => document.querySelector("#answer .copied").textContent !== "", null, { timeout: 5000 });
  }
  if ((await page.locator("#history li").count()) !== 2) fail("history does not hold the structured answer");

  // Quick look: the image goes as detail "low" and the request succeeds.
  await page.uncheck("#structured");
  await page.check("#quick-look");
  await page.fill("#max-tokens", "8");
  await page.click("#send");
  await page.waitForFunction(() => /prompt \d+ tokens \(quick look\) · \w+$/.test(document.getElementById("timings").textContent), null, { timeout: 120000 });
  const quick = sent[1];
  if (!quick || quick.messages[0].content[0].image_url.detail !== "low") fail("quick look did not send detail low");
  if (quick && quick.response_format) fail("structured answer sent while unchecked");
  if (await page.locator("#answer.error").count()) fail("quick look failed: " + await page.textContent("#answer"));
  console.log("ui_test: quick look:", await page.textContent("#timings"));
  if (errors.length) fail("page errors: " + errors.join("; "));
} catch (e) {
  fail(String(e && e.stack || e));
} finally {
  await browser.close();
  server.kill("SIGTERM");
  await new Promise((r) => server.on("exit", r));
  rmSync(cache, { recursive: true, force: true });
}
if (!process.exitCode) console.log("ui_test: ok");
