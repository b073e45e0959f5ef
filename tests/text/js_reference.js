// js_reference.js: the JavaScript reference for the tokenizer conformance test (test_text_conformance).
// Loads a tokenizer directory (tokenizer.json + tokenizer_config.json) with @lenml/tokenizers (a port
// of HF tokenizers), encodes every line of a corpus (JSON lines of strings), decodes the ids back,
// renders chat cases with the tokenizer's Jinja chat template, and times encoding of the corpus.
//   node js_reference.js TOKENIZER_DIR CORPUS_JSONL CHAT_CASES_JSON OUT_JSONL BENCH_REPEATS
// Output lines: {"ids": [...], "text": "..."} per corpus line, then {"chat": [...]}, then
// {"bench": {"bytes": B, "seconds": S}}. The package is found under $AQA_SRC/.npm (launch/setup.sh).
"use strict";
const fs = require("fs");
const path = require("path");

const [dir, corpusPath, chatPath, outPath, repeatsArg] = process.argv.slice(2);
if (!outPath) {
  console.error("usage: node js_reference.js TOKENIZER_DIR CORPUS_JSONL CHAT_CASES_JSON OUT_JSONL [REPEATS]");
  process.exit(2);
}
const src = process.env.AQA_SRC || path.join(__dirname, "..", "..");
const pkg = path.join(src, ".npm", "node_modules", "@lenml", "tokenizers");
if (!fs.existsSync(path.join(pkg, "package.json"))) {
  console.error(`js_reference: ${pkg} is missing: run launch/setup.sh (it installs the pinned npm packages)`);
  process.exit(3);
}
const { TokenizerLoader } = require(pkg);
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
});

const lines = fs.readFileSync(corpusPath, "utf8").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l));
const encode = (t) => tokenizer.encode(t, { add_special_tokens: false });
const out = [];
for (const text of lines) {
  const ids = encode(text);
  const back = tokenizer.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  out.push(JSON.stringify({ ids, text: back }));
}

// The Jinja engine of this package (@huggingface/jinja 0.2.2) lacks the `string` test; `X is string` is
// rewritten to `X.upper is defined` (only strings have .upper), the one change made to the template.
const template = tokenizer.chat_template.replace(/(\w+\['\w+'\]) is string/g, "$1.upper is defined");
const cases = JSON.parse(fs.readFileSync(chatPath, "utf8"));
const chat = cases.map((c) =>
  tokenizer.apply_chat_template(c.messages, {
    chat_template: template,
    tokenize: false,
    add_generation_prompt: c.add_generation_prompt,
  })
);
out.push(JSON.stringify({ chat }));

// Throughput: the corpus encoded REPEATS more times (the pass above warmed the caches).
const repeats = Number(repeatsArg || 3);
let bytes = 0;
for (const t of lines) bytes += Buffer.byteLength(t, "utf8");
const t0 = process.hrtime.bigint();
for (let r = 0; r < repeats; r++) for (const t of lines) encode(t);
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
out.push(JSON.stringify({ bench: { bytes: bytes * repeats, seconds } }));
fs.writeFileSync(outPath, out.join("\n") + "\n");
