"""What the interop scripts share: the offline environment, the repository root, failing checks, the two version
sets, and loading / running the reference models (float32, eager attention, eval mode, no grad).

    from common import REPO, check, ...     # first, before torch / transformers / tokenizers are imported

The scripts run as `interop/.venv/bin/python interop/<script>.py` (the "pinned" set) or
`interop/.venv-current/bin/python interop/<script>.py` (the "current" set), so this folder is on sys.path. A script
names the set it runs under in `setup(version_set=...)` ("pinned" unless it says otherwise), and `setup` refuses any
other installed version of the libraries it checks. Importing this
module sets the environment variables below, which the Hugging Face libraries read when they are imported: keep
the `from common import` line above the other third-party imports. torch, transformers and peft are imported
inside the functions that use them, so the scripts that need only REPO do not load them.
"""

import importlib
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
# transformers 5 swaps layers for hub kernels by default (`use_kernels` defaults to on); references are plain PyTorch
os.environ["USE_HUB_KERNELS"] = "NO"

REPO = Path(__file__).resolve().parent.parent
ATTN_IMPL = "eager"
# The model inputs a fixture's JSON may hold, in the order they are passed.
INPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask")
# The two version sets (interop/README.md): "pinned" makes the reference fixtures, "current" (today's releases, as
# locked in interop/requirements-current.txt) checks that users of today's PEFT read and write the same adapters.
# name -> (requirements file, venv folder, the set-up command); the versions are those `name==version` lines.
VERSION_SETS = {
    "pinned": ("requirements.txt", ".venv", "bash interop/setup.sh"),
    "current": ("requirements-current.txt", ".venv-current", "bash interop/setup.sh current"),
    # the pinned set plus diffusers and scikit-learn, for the U-Net fixtures and the digits data (CPU torch)
    "vision": ("requirements-vision.txt", ".venv-vision", "bash interop/setup.sh vision"),
}
# The libraries whose versions a script checks by default (setup).
CHECKED = ("torch", "transformers", "peft", "safetensors", "numpy")


class CheckError(RuntimeError):
    pass


def check(cond, msg):
    if not cond:
        raise CheckError(msg)


def run(name, main, *args):
    """main(*args); a failed check ends the script with `<name>: FAILED: <message>` on stderr and exit status 1."""
    try:
        main(*args)
    except CheckError as e:
        print(f"{name}: FAILED: {e}", file=sys.stderr)
        sys.exit(1)


def pinned_versions(version_set="pinned"):
    """name -> version of every `name==version` line in the version set's requirements file."""
    check(version_set in VERSION_SETS, f"unknown version set {version_set!r}; expected one of {sorted(VERSION_SETS)}")
    out = {}
    for line in (Path(__file__).resolve().parent / VERSION_SETS[version_set][0]).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = (part.strip() for part in line.split("==", 1))
            out[name.lower().replace("_", "-")] = version
    return out


def versions(*names):
    """name -> installed version (without a `+local` suffix), in the order asked; default: every library used here."""
    names = names or ("torch", "transformers", "peft", "safetensors", "tokenizers", "numpy")
    return {n: importlib.import_module(n).__version__.split("+")[0] for n in names}


def setup(*names, version_set="pinned"):
    """The start of every script that runs models: the installed versions of `names` (default: CHECKED) are exactly
    those of `version_set` ("pinned" or "current"); torch uses 2 threads and deterministic algorithms; transformers
    logs only errors; the working directory is REPO."""
    want = pinned_versions(version_set)
    file, venv, command = VERSION_SETS[version_set]
    for name, have in versions(*(names or CHECKED)).items():
        check(name in want, f"internal: {name} has no `{name}==version` line in interop/{file}")
        check(
            have == want[name],
            f"{name} {have} installed, {want[name]} in interop/{file} (the {version_set!r} version set); run "
            f"interop/{venv}/bin/python after `{command}`",
        )

    import torch
    import transformers

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    os.chdir(REPO)


def f32(x):
    """x as the float32 value it rounds to (written exactly in JSON)."""
    import numpy as np

    return float(np.float32(x))


def f32_rows(t):
    """A 2-D tensor as a list of rows of float32 values."""
    return [[f32(x) for x in row] for row in t.tolist()]


def load(folder, seqcls=False, **kw):
    """from_pretrained(folder) as a causal LM (or a sequence classifier), float32, eager attention, in eval mode.
    The folder is passed as given (a relative one is recorded as such, e.g. as PEFT's base_model_name_or_path).
    Extra keywords go to from_pretrained; with output_loading_info=True the result is (model, info)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if seqcls else AutoModelForCausalLM
    out = cls.from_pretrained(str(folder), dtype=torch.float32, attn_implementation=ATTN_IMPL, **kw)
    (out[0] if kw.get("output_loading_info") else out).eval()
    return out


def forward(model, inputs):
    """float32 logits of model (in eval mode, no grad) for the INPUT_KEYS present in inputs (lists or tensors)."""
    import torch

    kw = {k: torch.as_tensor(inputs[k]) for k in INPUT_KEYS if k in inputs}
    model.eval()
    with torch.no_grad():
        return model(**kw).logits.float().contiguous()


def max_abs_diff(a, b):
    return (a - b).abs().max().item()


def adapter_effect(logits, base_logits, seqcls, case):
    """How much an adapter moves the logits; it must move them clearly (0.02 for BERT's 2 classes, 0.05 for LMs)."""
    d = max_abs_diff(logits, base_logits)
    check(d > (0.02 if seqcls else 0.05), f"{case}: the adapter barely changes the logits ({d})")
    return d


def merged_logits(peft_model, inputs, logits, case):
    """forward of peft_model.merge_and_unload() and its distance to the unmerged logits (must be below 1e-4)."""
    merged = forward(peft_model.merge_and_unload(), inputs)
    d = max_abs_diff(merged, logits)
    check(d < 1e-4, f"{case}: merged logits differ from unmerged by {d}")
    return merged, d


def lora_layers(model, number=float):
    """Module path (as in the base model) -> kind, r, lora_alpha, scaling, use_dora, as PEFT resolved them from the
    config; number converts lora_alpha and scaling (float, or f32 to write them as float32)."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, LoraLayer) and "default" in mod.r:
            out[name.replace("base_model.model.", "", 1)] = {
                "kind": type(mod).__name__,
                "r": int(mod.r["default"]),
                "lora_alpha": number(mod.lora_alpha["default"]),
                "scaling": number(mod.scaling["default"]),
                "use_dora": bool(mod.use_dora.get("default", False)),
            }
    return dict(sorted(out.items()))


def vera_layers(model):
    """Module path (as in the base model) -> kind, in/out features, r and fan_in_fan_out of each VeRA layer, as PEFT
    resolved them (the shared projections are sized by the largest in/out over these layers)."""
    from peft.tuners.vera import VeraLayer

    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, VeraLayer) and "default" in mod.r:
            out[name.replace("base_model.model.", "", 1)] = {
                "kind": type(mod.get_base_layer()).__name__,
                "in_features": int(mod.in_features),
                "out_features": int(mod.out_features),
                "r": int(mod.r["default"]),
                "fan_in_fan_out": bool(mod.fan_in_fan_out),
            }
    return dict(sorted(out.items()))


def shard_layers(model):
    """Module path (as in the base model) -> kind, in/out features, r, mode and mini_r of each MiSS (or Bone) layer, as
    PEFT resolved them (mode is PEFT's miss_fn / bone_fn: the config's init_weights)."""
    out = {}
    for name, mod in model.named_modules():
        for prefix in ("miss", "bone"):
            rs = getattr(mod, f"{prefix}_r", None)
            if isinstance(rs, dict) and "default" in rs:
                mode = getattr(mod, f"{prefix}_fn")
                out[name.replace("base_model.model.", "", 1)] = {
                    "kind": type(mod.get_base_layer()).__name__,
                    "in_features": int(mod.in_features),
                    "out_features": int(mod.out_features),
                    "r": int(rs["default"]),
                    "mode": mode if isinstance(mode, str) else bool(mode),
                    "mini_r": int(getattr(mod, f"{prefix}_mini_r", {}).get("default", 0)),
                }
    return dict(sorted(out.items()))
