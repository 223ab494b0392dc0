"""Reference safetensors file written by the Python `safetensors` package, for lorakit's reader tests.

Writes test/fixtures/safetensors/python.safetensors (torch tensors through safetensors.torch.save_file, as PEFT and
transformers do) and python.json with the expected dtype, shape and values of each tensor. 16-bit floats are listed
both as values and as their exact bit patterns; I64 values are strings because JSON numbers lose bits above 2**53.

    interop/.venv/bin/python interop/safetensors_fixture.py            # regenerate the committed fixture
    interop/.venv/bin/python interop/safetensors_fixture.py check F J  # load a lorakit-written file F, compare to J

The check mode is the reverse direction (lorakit writes, Python reads); it is run by hand, npm test never needs Python.
"""
import json
import sys
from pathlib import Path

from common import REPO

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

OUT = REPO / "test" / "fixtures" / "safetensors"


def tensors() -> dict:
    return {
        "weight_f32": torch.tensor([[0.5, -1.25, 3.0], [1e-3, -7.75, 100.0]], dtype=torch.float32),
        "weight_f16": torch.tensor([1.0, -2.0, 65504.0, 2.0**-24, 1.0 / 3.0], dtype=torch.float16),
        "weight_bf16": torch.tensor([[0.1, -3.5], [1e30, 2.0**-130]], dtype=torch.bfloat16),
        "double_f64": torch.tensor([1.0 / 3.0, -2.5e-300], dtype=torch.float64),
        "ids_i64": torch.tensor([-(2**63), 2**53 + 1, 42], dtype=torch.int64),
        "counts_i32": torch.tensor([-(2**31), 2**31 - 1], dtype=torch.int32),
        "bytes_u8": torch.tensor([0, 128, 255], dtype=torch.uint8),
        "mask_bool": torch.tensor([True, False, False, True, True]),
        "scalar": torch.tensor(3.25, dtype=torch.float32),
        "empty": torch.zeros((0, 3), dtype=torch.float32),
    }


DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64", torch.int64: "I64",
    torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL",
}


def describe(t: torch.Tensor) -> dict:
    flat = t.reshape(-1)
    entry = {"dtype": DTYPES[t.dtype], "shape": list(t.shape)}
    if t.dtype == torch.int64:
        entry["values"] = [str(int(v)) for v in flat.tolist()]
    elif t.dtype == torch.bool:
        entry["values"] = [1 if v else 0 for v in flat.tolist()]
    elif t.dtype in (torch.float16, torch.bfloat16):
        entry["values"] = flat.float().tolist()  # exact: every 16-bit float is an f32
        entry["bits"] = [int(b) & 0xFFFF for b in flat.view(torch.int16).tolist()]
    else:
        entry["values"] = flat.tolist()
    return entry


def generate() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ts = tensors()
    save_file(ts, str(OUT / "python.safetensors"), metadata={"format": "pt"})
    expected = {"metadata": {"format": "pt"}, "tensors": {k: describe(v) for k, v in ts.items()}}
    (OUT / "python.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {OUT / 'python.safetensors'} and python.json")


def check(path: str, expected_path: str) -> None:
    expected = json.loads(Path(expected_path).read_text())
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == expected.get("metadata"), (f.metadata(), expected.get("metadata"))
        assert sorted(f.keys()) == sorted(expected["tensors"]), (sorted(f.keys()), sorted(expected["tensors"]))
        for name, want in expected["tensors"].items():
            got = describe(f.get_tensor(name))
            for key in ("dtype", "shape", "bits"):
                assert got.get(key) == want.get(key), (name, key, got.get(key), want.get(key))
            if want["dtype"] in ("I64", "BOOL", "I32", "U8"):
                assert got["values"] == want["values"], (name, got["values"], want["values"])
            else:
                np.testing.assert_array_equal(np.array(got["values"], dtype=np.float64), np.array(want["values"], dtype=np.float64))
    print(f"{path}: {len(expected['tensors'])} tensors match {expected_path}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        generate()
