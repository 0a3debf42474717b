// The official openai npm client (v6) against `ostrakon serve` (the demo model, an API key):
// GET /v1/models, a chat completion with an image data URL, the same request streamed (chunks,
// usage at the end) and through the SDK's stream helper, an aborted stream whose KV blocks come
// back, and the typed errors (401 AuthenticationError, 400 BadRequestError, 404 NotFoundError).
// Usage: node openai_client_test.mjs [path/to/ostrakon]   (default: ../../build/bin/ostrakon)
// Exits non-zero on the first failed check.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import { VERSION } from "openai/version";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
const bin = process.argv[2] || process.env.OST_BIN || path.join(repo, "build/bin/ostrakon");
const image = path.join(repo, "tests/data/qwen3vl-tiny/images/shelf_300x200.png");
const cache = mkdtempSync(path.join(tmpdir(), "ost-openai-"));
const KEY = "client-test-key";
const MODEL = "ostrakon-demo-tiny";

class CheckFailed extends Error {}
function check(cond, msg) {
  if (!cond) throw new CheckFailed(msg);
}

const server = spawn(bin, ["serve", "--port", "0", "--api-key", KEY, "--demo-dir", path.join(cache, "demo"),
                           "--tokenizer", path.join(repo, "assets/qwen3/tokenizer.json")],
                     { stdio: ["ignore", "inherit", "pipe"] });
let log = "";
const exited = new Promise((r) => server.on("exit", r));
try {
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
  let healthy = false;
  for (let i = 0; i < 600 && !healthy; i++) {  // the demo model is written on first use
    try { healthy = (await fetch(base + "/health")).ok; } catch (e) { /* not yet */ }
    if (!healthy) await new Promise((r) => setTimeout(r, 200));
  }
  check(healthy, "/health never answered 200");
  const metric = async (name) => {
    const text = await (await fetch(base + "/metrics")).text();
    const m = new RegExp("^" + name + " (\\S+)$", "m").exec(text);
    return m ? Number(m[1]) : NaN;
  };

  const client = new OpenAI({ apiKey: KEY, baseURL: base + "/v1", maxRetries: 0, timeout: 120000 });

  // Models.
  const models = await client.models.list();
  const ids = models.data.map((m) => m.id);
  check(ids.includes(MODEL), "models: " + JSON.stringify(ids));
  check(models.data[0].object === "model", "model object: " + JSON.stringify(models.data[0]));

  // A chat completion with an image.
  const url = "data:image/png;base64," + readFileSync(image).toString("base64");
  const messages = [{ role: "user", content: [{ type: "image_url", image_url: { url } },
                                              { type: "text", text: "How many facings are on the shelf?" }] }];
  const req = { model: MODEL, messages, max_tokens: 8, temperature: 0 };
  const done = await client.chat.completions.create(req);
  check(done.object === "chat.completion", "object: " + done.object);
  check(done.id.startsWith("chatcmpl-"), "id: " + done.id);
  check(done.model === MODEL, "model: " + done.model);
  const choice = done.choices[0];
  check(choice.message.role === "assistant" && typeof choice.message.content === "string", "message: " + JSON.stringify(choice));
  check(choice.finish_reason === "length", "finish_reason: " + choice.finish_reason);
  check(done.usage.completion_tokens === 8 && done.usage.prompt_tokens > 20 &&
        done.usage.total_tokens === done.usage.prompt_tokens + 8, "usage: " + JSON.stringify(done.usage));

  // The same request streamed: content chunks, a finish chunk, then usage with no choices.
  const stream = await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
  let text = "", chunks = 0, finish = null, usage = null, usageChunks = 0;
  for await (const chunk of stream) {
    chunks++;
    check(chunk.object === "chat.completion.chunk", "chunk object: " + chunk.object);
    if (chunk.usage) { usage = chunk.usage; usageChunks++; check(chunk.choices.length === 0, "usage chunk has choices"); }
    for (const c of chunk.choices) {
      text += c.delta.content ?? "";
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  check(chunks >= 3, "only " + chunks + " chunks");
  check(usageChunks === 1 && usage.completion_tokens === 8 && usage.prompt_tokens === done.usage.prompt_tokens,
        "stream usage: " + JSON.stringify(usage));
  check(finish === "length", "stream finish_reason: " + finish);
  check(text === choice.message.content, `streamed ${JSON.stringify(text)} != ${JSON.stringify(choice.message.content)}`);

  // The SDK's stream helper accumulates the chunks into a whole completion.
  const runner = client.chat.completions.stream({ ...req, stream_options: { include_usage: true } });
  let deltas = "";
  runner.on("content", (d) => { deltas += d; });
  const final = await runner.finalChatCompletion();
  check(final.choices[0].message.content === choice.message.content && deltas === choice.message.content,
        "stream helper: " + JSON.stringify(final.choices[0].message));
  check(final.usage?.completion_tokens === 8, "stream helper usage: " + JSON.stringify(final.usage));

  // Aborting a stream cancels the request: its KV blocks come back.
  const long = await client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "A long story" }],
                                                      max_tokens: 3000, stream: true });
  let seen = 0;
  for await (const chunk of long) {
    if (++seen === 3) {
      check((await metric("ost_kv_blocks_used")) > 0, "no KV blocks in use while streaming");
      long.controller.abort();
      break;
    }
  }
  let freed = false;
  for (let i = 0; i < 200 && !freed; i++) {
    freed = (await metric("ost_kv_blocks_used")) === 0 && (await metric("ost_batch_running")) === 0;
    if (!freed) await new Promise((r) => setTimeout(r, 50));
  }
  check(freed, "the aborted stream still holds KV blocks");

  // Typed errors.
  const expectError = async (promise, cls, status, what) => {
    try {
      await promise;
    } catch (e) {
      check(e instanceof cls, `${what}: ${e?.constructor?.name} is not a ${cls.name}: ${e}`);
      check(e.status === status, `${what}: status ${e.status}`);
      return e;
    }
    throw new CheckFailed(what + ": no error");
  };
  const wrong = new OpenAI({ apiKey: "wrong-key", baseURL: base + "/v1", maxRetries: 0 });
  const e401 = await expectError(wrong.chat.completions.create(req), OpenAI.AuthenticationError, 401, "wrong key");
  check(e401.type === "authentication_error" && e401.code === "invalid_api_key", "401 body: " + JSON.stringify(e401.error));
  await expectError(wrong.models.list(), OpenAI.AuthenticationError, 401, "wrong key on /v1/models");
  const bad = [{ role: "user", content: [{ type: "image_url", image_url: { url: "data:image/png;base64,aGVsbG8=" } }] }];
  const e400 = await expectError(client.chat.completions.create({ model: MODEL, messages: bad, max_tokens: 2 }),
                                 OpenAI.BadRequestError, 400, "a bad image");
  check(e400.type === "invalid_request_error", "400 body: " + JSON.stringify(e400.error));
  const e404 = await expectError(client.chat.completions.create({ ...req, model: "gpt-4o" }), OpenAI.NotFoundError, 404,
                                 "an unknown model");
  check(e404.code === "model_not_found", "404 body: " + JSON.stringify(e404.error));
  const streamed401 = wrong.chat.completions.create({ ...req, stream: true });
  await expectError(streamed401, OpenAI.AuthenticationError, 401, "wrong key, streamed");

  console.log(`openai_client_test: ok (openai ${VERSION}; answer ${JSON.stringify(text.slice(0, 40))})`);
} catch (e) {
  console.error("openai_client_test: FAIL: " + (e instanceof CheckFailed ? e.message : (e?.stack || e)));
  process.exitCode = 1;
} finally {
  server.kill("SIGTERM");
  await exited;
  rmSync(cache, { recursive: true, force: true });
}
