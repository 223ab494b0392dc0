#!/usr/bin/env python3
"""Exports scikit-learn's bundled 8x8 handwritten digits (sklearn.datasets.load_digits: 1797 images, grey levels
0..16, from the UCI "Optical Recognition of Handwritten Digits" set, CC BY 4.0) to data/digits/digits.safetensors:

  images  U8 [1797, 8, 8]   grey level 0..16, as load_digits returns them
  labels  U8 [1797]         the digit

    interop/.venv-vision/bin/python interop/make_digits_data.py

The segmentation experiment (scripts/segmentation-transfer.ts, docs/vision.md) reads this file; nothing else in
lorakit needs scikit-learn. Deterministic (the data is the wheel's file, in its order).
"""

from common import REPO, check, run  # first: the offline environment

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402


def main():
    d = load_digits()
    images = d.images.astype(np.uint8)
    check(images.shape == (1797, 8, 8) and images.max() == 16, f"unexpected digits {images.shape} max {images.max()}")
    out = REPO / "data/digits/digits.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"images": images, "labels": d.target.astype(np.uint8)}, str(out),
              metadata={"source": f"scikit-learn {sklearn.__version__} load_digits (UCI optdigits, CC BY 4.0)"})
    print(f"make_digits_data: wrote {out.relative_to(REPO)} ({images.shape[0]} images)")


if __name__ == "__main__":
    run("make_digits_data", main)
