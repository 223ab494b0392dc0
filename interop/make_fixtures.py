#!/usr/bin/env python3
"""Regenerate every transformers/PEFT reference fixture used by lorakit's TypeScript tests.

    interop/.venv/bin/python interop/make_fixtures.py

Writes (after deleting them first, so nothing stale survives):
  test/fixtures/models/<name>/   tiny random HF models + tokenizer + expected.json/expected.safetensors
  test/fixtures/peft/<case>/     PEFT adapter folders + expected.json/expected.safetensors

Deterministic: two runs on the same machine/versions give byte-identical files. Any deviation from the
expected behaviour (wrong versions, degenerate outputs, reload mismatch, ...) raises and exits non-zero.
See interop/README.md for the exact semantics of every fixture.
"""

import os
import sys

# PEFT writes set-valued config fields (target_modules, ...) with list(set), whose order depends on the
# string hash seed: pin it by re-executing ourselves once with PYTHONHASHSEED=0.
if os.environ.get("PYTHONHASHSEED") != "0":
    env = dict(os.environ, PYTHONHASHSEED="0")
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

# first: sets the offline environment before the Hugging Face libraries are imported
from common import (  # noqa: E402
    ATTN_IMPL,
    REPO,
    CheckError,
    adapter_effect,
    check,
    f32,
    f32_rows,
    forward,
    load,
    lora_layers,
    max_abs_diff,
    merged_logits,
    run,
    setup,
    versions,
)

import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

MODELS_REL = "test/fixtures/models"
PEFT_REL = "test/fixtures/peft"
DATA = Path("/work/shared/data")
if not DATA.is_dir():
    DATA = REPO / "shared" / "data"

VOCAB = 384
SEQ_LEN = 12
N_PAD = 4
PROMPT_LEN = 6
MAX_NEW = 16
REP_PENALTY = 1.3
LONG_LEN = 64
# Greedy fixtures are only useful if the top-1 choice is not a near tie (float noise in another
# implementation could flip it). Every generated step must beat the runner-up by this margin.
MIN_GREEDY_GAP = 2e-4


# --------------------------------------------------------------------------------------------------
# JSON helpers: float32-exact numbers (common.f32), arrays of scalars on one line, stable key order as written.


def _fmt(obj, indent=0):
    pad = "  " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f'{pad}  {json.dumps(str(k))}: {_fmt(v, indent + 1)}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in obj):
            return "[" + ", ".join(_fmt(v) for v in obj) + "]"
        items = [pad + "  " + _fmt(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return json.dumps(obj)
    if isinstance(obj, float):
        check(math.isfinite(obj), f"non-finite number {obj} in JSON")
        return json.dumps(obj)
    raise CheckError(f"cannot serialise {type(obj)} to JSON")


def write_json(path, obj):
    Path(path).write_text(_fmt(obj) + "\n", encoding="utf-8")


def save_tensors(path, tensors):
    out = {}
    for k, t in tensors.items():
        t = t.detach().contiguous()
        check(torch.isfinite(t).all().item() if t.is_floating_point() else True, f"non-finite values in {k}")
        out[k] = t
    save_file(out, str(path), metadata={"format": "pt"})


def save_expected(folder, tensors):
    """Writes folder/expected.safetensors; returns its keys and shapes (expected.json["safetensors_keys"])."""
    save_tensors(folder / "expected.safetensors", tensors)
    return {k: list(v.shape) for k, v in tensors.items()}


def fresh_dir(rel):
    p = REPO / rel
    if p.exists():
        shutil.rmtree(p)
    p.mkdir(parents=True)
    return p


# --------------------------------------------------------------------------------------------------
# Tokenizers


def corpus_lines():
    shakes = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    pp = (DATA / "pride_and_prejudice" / "1342-0.txt").read_text(encoding="utf-8").replace("\r\n", "\n")
    start = pp.find("It is a truth universally acknowledged")
    check(start > 0, "Pride and Prejudice text: start of chapter 1 not found")
    text = shakes[:100_000] + "\n" + pp[start : start + 100_000]
    return [line for line in text.split("\n") if line.strip()]


LLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _train_bpe_once(lines, specials):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    return tok


def check_vocab(tok, specials, kind):
    """The vocabulary has VOCAB entries and the special tokens the first ids, in order."""
    check(tok.get_vocab_size() == VOCAB, f"{kind} vocab {tok.get_vocab_size()} != {VOCAB}")
    for i, s in enumerate(specials):
        check(tok.token_to_id(s) == i, f"special token {s} expected at id {i}")


def train_bpe(lines, specials, post_processor):
    tok = _train_bpe_once(lines, specials)
    check_vocab(tok, specials, "BPE")
    # Guard against hash-order nondeterminism in the Rust trainer (WordPiece has some, see below).
    check(_train_bpe_once(lines, specials).to_str() == tok.to_str(), "BPE training is not deterministic")
    tok.post_processor = post_processor
    return tok


def tokenizer_spec(tokenizer, ids, chat_template=None, **kwargs):
    """A trained tokenizer with the special-token ids the fixtures use; kwargs go to PreTrainedTokenizerFast."""
    return dict(tokenizer=tokenizer, kwargs=kwargs, chat_template=chat_template, ids=ids)


def make_tokenizers():
    lines = corpus_lines()
    out = {}

    # GPT-2 style: <|endoftext|> is bos = eos = unk, no pad, no BOS added on encode.
    out["gpt2"] = tokenizer_spec(
        train_bpe(lines, ["<|endoftext|>"], processors.ByteLevel(trim_offsets=False)),
        ids=dict(bos=0, eos=0, pad=None),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )

    # Llama family (llama, llama3, mistral, smollm share it): <unk>=0 <s>=1 </s>=2 like Llama-2, and a
    # TemplateProcessing post-processor that prepends <s> (add_special_tokens=True), no pad token.
    prepend_bos = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    out["llama"] = tokenizer_spec(
        train_bpe(lines, ["<unk>", "<s>", "</s>"], prepend_bos),
        ids=dict(bos=1, eos=2, pad=None),
        chat_template=LLAMA_CHAT_TEMPLATE,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )

    # Qwen2 style: <|endoftext|>=0 (pad), <|im_start|>=1, <|im_end|>=2 (eos), no BOS, ChatML template.
    out["qwen2"] = tokenizer_spec(
        train_bpe(lines, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], processors.ByteLevel(trim_offsets=False)),
        ids=dict(bos=None, eos=2, pad=0),
        chat_template=CHATML_TEMPLATE,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )

    # BERT: lower-casing WordPiece, [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    t = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    t.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    t.decoder = decoders.WordPiece(prefix="##")
    # The WordPiece trainer assigns ids to the '##x' alphabet (and to equal-count merges) in Rust HashMap
    # order, which differs between processes. The learned token *set* is stable (checked over 3 trainings),
    # so ids are made canonical: specials first, then every other token in code-point order. WordPiece
    # encoding (greedy longest match) does not depend on ids.
    token_sets = []
    for _ in range(3):
        trainer = trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False)
        t.train_from_iterator(lines, trainer)
        token_sets.append(frozenset(t.get_vocab()))
    check(len(set(token_sets)) == 1, "WordPiece training learned different token sets on repeated runs")
    rest = sorted(token_sets[0] - set(specials))
    canon = {tok: i for i, tok in enumerate(specials + rest)}
    t.model = models.WordPiece(vocab=canon, unk_token="[UNK]", max_input_chars_per_word=100, continuing_subword_prefix="##")
    check_vocab(t, specials, "WordPiece")
    t.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    out["bert"] = tokenizer_spec(
        t,
        ids=dict(pad=0, unk=1, cls=2, sep=3, mask=4),
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    return out


def save_tokenizer(spec, folder):
    kwargs = dict(spec["kwargs"])
    if spec["chat_template"] is not None:
        kwargs["chat_template"] = spec["chat_template"]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(spec["tokenizer"].to_str()),
        model_max_length=128,
        clean_up_tokenization_spaces=False,
        **kwargs,
    )
    # Keep chat_template inside tokenizer_config.json (not a separate chat_template.jinja).
    fast.save_pretrained(str(folder), save_jinja_files=False)
    check((folder / "tokenizer.json").is_file(), "tokenizer.json not written")
    # Round trip: the saved tokenizer reproduces the trained one.
    again = PreTrainedTokenizerFast.from_pretrained(str(folder))
    sample = "First Citizen: It is a truth universally acknowledged, Mr. Darcy!"
    check(again(sample)["input_ids"] == spec["tokenizer"].encode(sample).ids, "tokenizer round trip mismatch")
    if spec["chat_template"] is not None:
        check(again.chat_template == spec["chat_template"], "chat template not saved")


# --------------------------------------------------------------------------------------------------
# Models


def reinit(model, seed):
    """Non-degenerate random init: every parameter visibly influences the outputs."""
    g = torch.Generator().manual_seed(seed)
    norm_re = re.compile(r"(norm|ln_\d|ln_f|LayerNorm)", re.IGNORECASE)
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied parameters are listed once
            if norm_re.search(name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            n += 1
    check(n > 0, "no parameters re-initialised")


# Sizes every model but GPT-2 (which names them n_embd, n_layer, ...) shares.
SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=128,
    initializer_range=0.05,
)

# Llama, Mistral and Qwen2: the decoder settings they share, and what each adds or changes. The config classes
# store unknown keywords as attributes (and write them to config.json), so each one gets only its own keys.
DECODER = dict(
    SIZES,
    num_key_value_heads=2,
    hidden_act="silu",
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    attention_dropout=0.0,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
)
LLAMA = dict(DECODER, head_dim=16, attention_bias=False, mlp_bias=False)
MISTRAL = dict(DECODER, head_dim=16, rope_theta=1000000.0, sliding_window=None)
QWEN2 = dict(
    DECODER,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    use_sliding_window=False,
    sliding_window=None,
    max_window_layers=2,
    bos_token_id=None,
    pad_token_id=0,
)

MODEL_SPECS = {
    "gpt2": dict(
        seed=101,
        tok="gpt2",
        cls=GPT2LMHeadModel,
        config=lambda: GPT2Config(
            vocab_size=VOCAB,
            n_positions=128,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_inner=None,
            activation_function="gelu_new",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            layer_norm_epsilon=1e-5,
            initializer_range=0.05,
            scale_attn_weights=True,
            bos_token_id=0,
            eos_token_id=0,
        ),
    ),
    "llama": dict(seed=102, tok="llama", cls=LlamaForCausalLM, config=lambda: LlamaConfig(**LLAMA)),
    "llama3": dict(
        seed=103,
        tok="llama",
        cls=LlamaForCausalLM,
        config=lambda: LlamaConfig(
            **LLAMA,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                # 32 (not 16): with head_dim 16 and theta 1e4 the wavelengths are 6.28, 19.9, 62.8, ... so
                # 32 puts one frequency in each branch (kept / smoothly interpolated / divided by factor).
                "original_max_position_embeddings": 32,
            },
        ),
    ),
    "mistral": dict(seed=104, tok="llama", cls=MistralForCausalLM, config=lambda: MistralConfig(**MISTRAL)),
    "qwen2": dict(seed=105, tok="qwen2", cls=Qwen2ForCausalLM, bf16=True, config=lambda: Qwen2Config(**QWEN2)),
    "smollm": dict(
        seed=106,
        tok="llama",
        cls=LlamaForCausalLM,
        config=lambda: LlamaConfig(**dict(LLAMA, num_key_value_heads=1, tie_word_embeddings=True)),
    ),
    "bert": dict(
        seed=107,
        tok="bert",
        cls=BertForSequenceClassification,
        config=lambda: BertConfig(
            **SIZES,
            hidden_act="gelu",
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            type_vocab_size=2,
            layer_norm_eps=1e-12,
            pad_token_id=0,
            num_labels=2,
            classifier_dropout=None,
        ),
    ),
}


def causal_inputs(seed, vocab):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, SEQ_LEN), generator=g)
    return ids


def padded_inputs(ids, pad_id):
    """Row 0 unchanged; row 1 = N_PAD pads (left) + first SEQ_LEN-N_PAD tokens of sequence 1."""
    p = ids.clone()
    p[1, N_PAD:] = ids[1, : SEQ_LEN - N_PAD]
    p[1, :N_PAD] = pad_id
    mask = torch.ones_like(p)
    mask[1, :N_PAD] = 0
    # exactly what GenerationMixin.prepare_inputs_for_generation does
    pos = mask.long().cumsum(-1) - 1
    pos.masked_fill_(mask == 0, 1)
    return p, mask, pos


def check_greedy(model, prompt, new_tokens, penalty):
    """Recompute every greedy step with a full (cache-free) forward and check the decision margin."""
    seq = torch.cat([prompt, new_tokens]).unsqueeze(0)
    with torch.no_grad():
        logits = model(input_ids=seq).logits[0]
    min_gap = float("inf")
    for t in range(len(new_tokens)):
        pos = len(prompt) - 1 + t
        scores = logits[pos].clone()
        if penalty != 1.0:
            seen = torch.unique(seq[0, : pos + 1])
            s = scores[seen]
            scores[seen] = torch.where(s < 0, s * penalty, s / penalty)
        top2 = torch.topk(scores, 2)
        check(top2.indices[0].item() == new_tokens[t].item(), f"greedy step {t}: full-forward argmax differs")
        min_gap = min(min_gap, (top2.values[0] - top2.values[1]).item())
    check(min_gap >= MIN_GREEDY_GAP, f"greedy decision margin {min_gap} below {MIN_GREEDY_GAP} (change the prompt seed)")
    return min_gap


def greedy(model, prompt, eos_id, pad_id, penalty):
    kw = {}
    if penalty != 1.0:
        kw["repetition_penalty"] = penalty
    with torch.no_grad():
        out = model.generate(
            input_ids=prompt.unsqueeze(0),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=MAX_NEW,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            **kw,
        )[0]
    check(torch.equal(out[: len(prompt)], prompt), "generate did not echo the prompt")
    new = out[len(prompt) :]
    check(len(new) == MAX_NEW, f"generate stopped early ({len(new)} tokens, eos emitted?) - change the prompt seed")
    check(eos_id not in new.tolist(), "eos generated; fixture would depend on stopping rules")
    gap = check_greedy(model, prompt, new, penalty)
    return new.tolist(), gap


def config_summary(cfg):
    keys = [
        "model_type", "architectures", "vocab_size", "hidden_size", "n_embd", "intermediate_size", "n_inner",
        "num_hidden_layers", "n_layer", "num_attention_heads", "n_head", "num_key_value_heads", "head_dim",
        "max_position_embeddings", "n_positions", "rope_theta", "rope_scaling", "rms_norm_eps", "layer_norm_eps",
        "layer_norm_epsilon", "hidden_act", "activation_function", "tie_word_embeddings", "sliding_window",
        "type_vocab_size", "num_labels", "bos_token_id", "eos_token_id", "pad_token_id",
    ]
    d = cfg.to_dict()
    out = {}
    for k in keys:
        if k in d:
            out[k] = d[k]
    if "id2label" in d and cfg.model_type == "bert":
        out["num_labels"] = len(d["id2label"])
    return out


def make_model(name, spec, toks):
    rel = f"{MODELS_REL}/{name}"
    folder = fresh_dir(rel)
    seed = spec["seed"]
    torch.manual_seed(seed)
    cfg = spec["config"]()
    model = spec["cls"](cfg)
    reinit(model, seed)
    model.eval()
    if spec.get("bf16"):
        model = model.to(torch.bfloat16)
    model.save_pretrained(str(folder), safe_serialization=True)
    check((folder / "model.safetensors").is_file(), f"{name}: model.safetensors missing")
    tok_spec = toks[spec["tok"]]
    save_tokenizer(tok_spec, folder)

    # Every stored tensor has the intended dtype.
    want_dtype = "BF16" if spec.get("bf16") else "F32"
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        for k in f.keys():
            dt = f.get_slice(k).get_dtype()
            check(dt == want_dtype, f"{name}: {k} stored as {dt}, expected {want_dtype}")

    info = {
        "model": name,
        "architecture": cfg.architectures[0] if cfg.architectures else spec["cls"].__name__,
        "weights_dtype": "bfloat16" if spec.get("bf16") else "float32",
        "compute_dtype": "float32",
        "attn_implementation": ATTN_IMPL,
        "seed": seed,
        "versions": versions(),
        "config": None,
    }
    if name == "bert":
        info.update(bert_expected(rel, folder, tok_spec))
    else:
        info.update(causal_expected(name, rel, folder, tok_spec))
    info["config"] = config_summary(load_config(rel))
    write_json(folder / "expected.json", info)
    return info


def load_config(rel):
    return transformers.AutoConfig.from_pretrained(rel)


def causal_expected(name, rel, folder, tok_spec):
    model = load(rel)
    check(next(model.parameters()).dtype == torch.float32, "model not loaded in float32")
    V = model.config.vocab_size
    ids = causal_inputs(1000 + hash_name(name), V)
    eos = tok_spec["ids"]["eos"]
    pad = tok_spec["ids"]["pad"] if tok_spec["ids"]["pad"] is not None else eos
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        p_ids, p_mask, p_pos = padded_inputs(ids, pad)
        logits_p = model(input_ids=p_ids, attention_mask=p_mask, position_ids=p_pos).logits
    check(list(logits.shape) == [2, SEQ_LEN, V], "logits shape")
    check(logits.std().item() > 0.05, f"{name}: logits nearly constant (std {logits.std().item()})")
    # Sanity of the padding semantics: real tokens give the same logits as the unpadded prefix.
    d0 = max_abs_diff(logits_p[0], logits[0])
    d1 = max_abs_diff(logits_p[1, N_PAD:], logits[1, : SEQ_LEN - N_PAD])
    check(d0 < 1e-5 and d1 < 1e-5, f"{name}: padded logits differ from unpadded ({d0}, {d1})")

    tensors = {"logits": logits, "logits_padded": logits_p}
    out = {
        "input_ids": ids.tolist(),
        "logits_shape": list(logits.shape),
        "input_ids_padded": p_ids.tolist(),
        "attention_mask_padded": p_mask.tolist(),
        "position_ids_padded": p_pos.tolist(),
        "pad_token_id_used": pad,
        "padding_side": "left",
        "padded_vs_unpadded_max_abs_diff": f32(max(d0, d1)),
    }
    prompt = ids[0, :PROMPT_LEN]
    g, gap = greedy(model, prompt, eos, pad, 1.0)
    gr, gap_r = greedy(model, prompt, eos, pad, REP_PENALTY)
    out.update(
        {
            "greedy_prompt_ids": prompt.tolist(),
            "greedy_max_new_tokens": MAX_NEW,
            "greedy": g,
            "greedy_min_margin": f32(gap),
            "repetition_penalty": REP_PENALTY,
            "greedy_rep": gr,
            "greedy_rep_min_margin": f32(gap_r),
        }
    )
    if name == "llama3":
        gl = torch.Generator().manual_seed(3000)
        long_ids = torch.randint(0, V, (1, LONG_LEN), generator=gl)
        with torch.no_grad():
            long_logits = model(input_ids=long_ids).logits
        tensors["long_logits"] = long_logits
        out["long_input_ids"] = long_ids.tolist()
        out["long_logits_shape"] = list(long_logits.shape)
        rope = model.model.rotary_emb
        out["rope_inv_freq"] = [f32(x) for x in rope.inv_freq.tolist()]
        out["rope_attention_scaling"] = float(rope.attention_scaling)
        default_inv = 1.0 / (10000.0 ** (torch.arange(0, 16, 2, dtype=torch.int64).float() / 16))
        check(not torch.allclose(rope.inv_freq, default_inv), "llama3 rope scaling did not change inv_freq")
    out["safetensors_keys"] = save_expected(folder, tensors)
    return out


def hash_name(name):
    # stable small integer from the name (Python's hash() is salted)
    return sum((i + 1) * ord(c) for i, c in enumerate(name))


def bert_inputs(ids_spec, seed, V):
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(5, V, (2, SEQ_LEN), generator=g)
    cls, sep, pad = ids_spec["cls"], ids_spec["sep"], ids_spec["pad"]
    # row 0: [CLS] a(5) [SEP] b(4) [SEP]                      -> 12 tokens, segments 0x7 1x5
    row0 = [cls] + r[0, :5].tolist() + [sep] + r[0, 5:9].tolist() + [sep]
    tt0 = [0] * 7 + [1] * 5
    # row 1: [CLS] a(3) [SEP] b(2) [SEP] [PAD]x4 (right padded) -> segments 0x5 1x3, pads 0
    row1 = [cls] + r[1, :3].tolist() + [sep] + r[1, 3:5].tolist() + [sep] + [pad] * N_PAD
    tt1 = [0] * 5 + [1] * 3 + [0] * N_PAD
    m0 = [1] * SEQ_LEN
    m1 = [1] * (SEQ_LEN - N_PAD) + [0] * N_PAD
    return (
        torch.tensor([row0, row1]),
        torch.tensor([tt0, tt1]),
        torch.tensor([m0, m1]),
    )


def bert_expected(rel, folder, tok_spec):
    model = load(rel, seqcls=True)
    V = model.config.vocab_size
    ids, tt, mask = bert_inputs(tok_spec["ids"], 2000, V)
    with torch.no_grad():
        out = model(input_ids=ids, token_type_ids=tt, attention_mask=mask, output_hidden_states=True)
        base = model.bert(input_ids=ids, token_type_ids=tt, attention_mask=mask)
    logits = out.logits
    check(torch.equal(out.hidden_states[-1], base.last_hidden_state), "bert hidden state mismatch")
    check(max_abs_diff(logits[0], logits[1]) > 1e-3, "bert logits identical for both rows")
    check(logits.std().item() > 1e-3, "bert logits degenerate")
    # Sanity: the right padding must not change the real tokens' outputs.
    with torch.no_grad():
        alone = model.bert(input_ids=ids[1:, : SEQ_LEN - N_PAD], token_type_ids=tt[1:, : SEQ_LEN - N_PAD])
    d = max_abs_diff(alone.last_hidden_state[0], base.last_hidden_state[1, : SEQ_LEN - N_PAD])
    check(d < 1e-5, f"bert padding changes real-token outputs ({d})")
    tensors = {
        "logits": logits,
        "last_hidden_state": base.last_hidden_state,
        "pooler_output": base.pooler_output,
    }
    keys = save_expected(folder, tensors)
    return {
        "input_ids": ids.tolist(),
        "token_type_ids": tt.tolist(),
        "attention_mask": mask.tolist(),
        "position_ids": [list(range(SEQ_LEN))] * 2,
        "padding_side": "right",
        "logits": f32_rows(logits),
        "logits_shape": list(logits.shape),
        "safetensors_keys": keys,
    }


# --------------------------------------------------------------------------------------------------
# PEFT adapters


PEFT_CASES = {
    "llama_lora_patterns": dict(
        base="llama",
        seed=201,
        description="LoRA on all 7 llama projections, rank_pattern and alpha_pattern overrides",
        config=dict(
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            r=8,
            lora_alpha=16,
            rank_pattern={"q_proj": 4, "layers.1.mlp.down_proj": 2},
            alpha_pattern={"v_proj": 32},
            task_type="CAUSAL_LM",
        ),
    ),
    "llama_rslora": dict(
        base="llama",
        seed=202,
        description="rsLoRA (scale = alpha/sqrt(r)) on q_proj,v_proj of layer 1 only",
        config=dict(
            target_modules=["q_proj", "v_proj"],
            r=8,
            lora_alpha=8,
            use_rslora=True,
            layers_to_transform=[1],
            task_type="CAUSAL_LM",
        ),
    ),
    "llama_dora": dict(
        base="llama",
        seed=203,
        description="DoRA on q_proj,v_proj,down_proj; magnitude vectors perturbed away from their init",
        config=dict(target_modules=["q_proj", "v_proj", "down_proj"], r=4, use_dora=True, task_type="CAUSAL_LM"),
    ),
    "llama_embed": dict(
        base="llama",
        seed=204,
        description="LoRA on embed_tokens (lora_embedding_A/B) plus q_proj; default save_embedding_layers='auto' "
        "also stores the base embed_tokens weight in the adapter",
        config=dict(target_modules=["embed_tokens", "q_proj"], r=4, task_type="CAUSAL_LM"),
    ),
    "gpt2_lora": dict(
        base="gpt2",
        seed=205,
        description="LoRA on GPT-2 Conv1D layers c_attn, c_proj (attn and mlp), c_fc with fan_in_fan_out=True",
        config=dict(
            target_modules=["c_attn", "c_proj", "c_fc"], r=4, lora_alpha=8, fan_in_fan_out=True, task_type="CAUSAL_LM"
        ),
    ),
    "smollm_regex": dict(
        base="smollm",
        seed=206,
        description="target_modules given as a regex string (full-match on module names), tied-embedding base",
        config=dict(
            target_modules=r".*\.(q_proj|v_proj)$", r=4, lora_bias=False, bias="none", task_type="CAUSAL_LM"
        ),
    ),
    "smollm_save_embed": dict(
        base="smollm",
        seed=208,
        description="tied-embedding base, modules_to_save=[embed_tokens]: the embedding trains a copy, the tied LM "
        "head keeps the base weight",
        config=dict(target_modules=["q_proj"], r=4, modules_to_save=["embed_tokens"], task_type="CAUSAL_LM"),
    ),
    "smollm_save_head": dict(
        base="smollm",
        seed=209,
        description="tied-embedding base, modules_to_save=[lm_head]: the head trains a copy (saved as lm_head.weight), "
        "the embedding keeps the base weight",
        config=dict(target_modules=["q_proj"], r=4, modules_to_save=["lm_head"], task_type="CAUSAL_LM"),
    ),
    "smollm_tied_save": dict(
        base="smollm",
        seed=210,
        description="tied-embedding base, modules_to_save=[embed_tokens] with ensure_weight_tying: embedding and head "
        "share one trained copy (saved under both names)",
        config=dict(
            target_modules=["q_proj"], r=4, modules_to_save=["embed_tokens"], ensure_weight_tying=True, task_type="CAUSAL_LM"
        ),
    ),
    "gpt2_bias_all": dict(
        base="gpt2",
        seed=211,
        description="bias='all': every parameter named bias trains (LayerNorm biases too), perturbed before saving",
        config=dict(target_modules=["c_attn"], r=4, fan_in_fan_out=True, bias="all", task_type="CAUSAL_LM"),
    ),
    "qwen2_lora_only": dict(
        base="qwen2",
        seed=212,
        description="bias='lora_only' on q/k projections with biases: PEFT 0.18 saves no bias (it looks for <path>.bias, "
        "the bias is at <path>.base_layer.bias), so the base biases apply",
        config=dict(target_modules=["q_proj", "k_proj"], r=4, bias="lora_only", task_type="CAUSAL_LM"),
    ),
    "bert_seqcls": dict(
        base="bert",
        seed=207,
        description="SEQ_CLS LoRA on BERT query,value with a trainable copy of the classifier (modules_to_save)",
        config=dict(target_modules=["query", "value"], r=4, lora_alpha=8, modules_to_save=["classifier"], task_type="SEQ_CLS"),
    ),
}


def perturb_adapter(model, seed, bias="none"):
    g = torch.Generator().manual_seed(seed)
    counts = {"A": 0, "B": 0, "magnitude": 0, "modules_to_save": 0, "bias": 0}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_A." in name or ".lora_embedding_A." in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
                counts["A"] += 1
            elif ".lora_B." in name or ".lora_embedding_B." in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
                counts["B"] += 1
            elif ".lora_magnitude_vector." in name:
                p.mul_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                counts["magnitude"] += 1
            elif ".modules_to_save." in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
                counts["modules_to_save"] += 1
            elif bias == "all" and p.requires_grad and name.endswith("bias"):
                # bias="all" saves every trained bias; lora_only saves none in PEFT 0.18, so those stay at the base
                p.add_(0.05 * torch.randn(p.shape, generator=g))
                counts["bias"] += 1
    check(counts["A"] > 0 and counts["A"] == counts["B"], f"unexpected adapter parameters {counts}")
    return counts


def make_peft_case(case, spec, model_infos, out_rel=PEFT_REL, base_atol=1e-6):
    """Writes out_rel/<case>/ for one PEFT_CASES entry; the base must reproduce its committed logits within base_atol
    (make_current_fixtures.py passes its own folder and the current set's tolerance)."""
    rel = f"{out_rel}/{case}"
    folder = fresh_dir(rel)
    base_name = spec["base"]
    base_rel = f"{MODELS_REL}/{base_name}"
    minfo = model_infos[base_name]  # the base's expected.json: input_ids (+ token_type_ids, attention_mask for BERT)
    is_bert = base_name == "bert"

    with safe_open(str(REPO / base_rel / "expected.safetensors"), "pt") as f:
        base_logits = f.get_tensor("logits")

    torch.manual_seed(spec["seed"])
    base = load(base_rel, is_bert)
    base_diff = max_abs_diff(forward(base, minfo), base_logits)
    check(base_diff <= base_atol, f"{case}: base model logits changed by {base_diff} (> {base_atol})")
    cfg = LoraConfig(**copy.deepcopy(spec["config"]))  # PEFT mutates list arguments in place
    pm = get_peft_model(base, cfg)
    counts = perturb_adapter(pm, spec["seed"], spec["config"].get("bias", "none"))
    pm.eval()
    logits = forward(pm, minfo)
    layers = lora_layers(pm)
    check(len(layers) > 0, f"{case}: no LoRA layers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm.save_pretrained(str(folder))
    check((folder / "adapter_model.safetensors").is_file(), f"{case}: adapter_model.safetensors missing")
    check((folder / "adapter_config.json").is_file(), f"{case}: adapter_config.json missing")
    check(json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == base_rel, "base path")

    # Reload exactly as a user would and check it reproduces the in-memory adapter.
    pm2 = PeftModel.from_pretrained(load(base_rel, is_bert), str(folder))
    reload_diff = max_abs_diff(forward(pm2, minfo), logits)
    check(reload_diff == 0.0, f"{case}: reloaded adapter gives different logits ({reload_diff})")
    vs_base = adapter_effect(logits, base_logits, is_bert, case)
    merged, merge_diff = merged_logits(pm2, minfo, logits, case)

    adapter_keys = {}
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        for k in sorted(f.keys()):
            sl = f.get_slice(k)
            check(sl.get_dtype() == "F32", f"{case}: {k} not float32")
            adapter_keys[k] = list(sl.get_shape())

    keys = save_expected(folder, {"logits": logits, "merged_logits": merged})
    info = {
        "case": case,
        "description": spec["description"],
        "base_model": base_rel,
        "lora_config": copy.deepcopy(spec["config"]),
        "perturbation": "lora_A ~ N(0, 0.1), lora_B ~ N(0, 0.05), DoRA magnitude *= 1 + N(0, 0.1), "
        "modules_to_save copies += N(0, 0.05); torch.Generator seed = the case seed",
        "seed": spec["seed"],
        "perturbed_tensor_counts": counts,
        "versions": versions(),
        "peft_version": peft.__version__,
        "attn_implementation": ATTN_IMPL,
        "input_ids": minfo["input_ids"],
    }
    if is_bert:
        info["token_type_ids"] = minfo["token_type_ids"]
        info["attention_mask"] = minfo["attention_mask"]
        info["logits"] = f32_rows(logits)
        info["merged_logits"] = f32_rows(merged)
    info.update(
        {
            "logits_shape": list(logits.shape),
            "max_abs_diff_merged_vs_unmerged": f32(merge_diff),
            "max_abs_diff_vs_base_model": f32(vs_base),
            "lora_layers": layers,
            "adapter_tensors": adapter_keys,
            "safetensors_keys": keys,
        }
    )
    write_json(folder / "expected.json", info)
    return info


# --------------------------------------------------------------------------------------------------


def main():
    setup()  # also chdir REPO: adapters record base_model_name_or_path relative to the repository root
    for d in (DATA / "tinyshakespeare" / "input.txt", DATA / "pride_and_prejudice" / "1342-0.txt"):
        check(d.is_file(), f"training text {d} not found")

    toks = make_tokenizers()
    infos = {}
    for name, spec in MODEL_SPECS.items():
        infos[name] = make_model(name, spec, toks)
        print(f"model  {name:22s} ok", flush=True)
    for case, spec in PEFT_CASES.items():
        info = make_peft_case(case, spec, infos)
        print(
            f"peft   {case:22s} ok  merged-vs-unmerged {info['max_abs_diff_merged_vs_unmerged']:.2e}"
            f"  vs-base {info['max_abs_diff_vs_base_model']:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    run("make_fixtures", main)
