"""What the pretrained yardstick rewards: the teacher's own held-out outputs, degraded.

Each variant of the teacher's output on the held-out pairs (docs/training.md) is
scored with the style gain of `distill_eval.py` (1 = the teacher as it is). Blur
and half resolution take texture away and keep the palette; the palette-only
variants keep the photo's structure and take only colour statistics (mean and
std per Lab channel) from the teacher's output or from the painting. A student
that matches the teacher's palette but not its brush strokes can only score what
those rows score.

    python benchmarks/yardstick_sensitivity.py --teacher build/train/magenta.magenta \\
        --out benchmarks/results/distill
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill_eval import HELDOUT, _images, score, stylize_pairs

from styleship.bench.report import write_table
from styleship.bench.yardstick import Yardstick
from styleship.runtime import image as im


def lab_statistics(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """`src` with the per-channel Lab mean and std of `ref` (Reinhard et al. 2001)."""
    a = cv2.cvtColor(src.astype(np.float32), cv2.COLOR_RGB2LAB)
    b = cv2.cvtColor(ref.astype(np.float32), cv2.COLOR_RGB2LAB)
    a = (a - a.mean((0, 1))) / (a.std((0, 1)) + 1e-6) * b.std((0, 1)) + b.mean((0, 1))
    return np.clip(cv2.cvtColor(a, cv2.COLOR_LAB2RGB), 0, 1)


def _half(t: np.ndarray) -> np.ndarray:
    small = cv2.resize(t, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (t.shape[1], t.shape[0]), interpolation=cv2.INTER_LINEAR)


VARIANTS = {
    "teacher": lambda c, s, t: t,
    "teacher, Gaussian blur sigma 1 px": lambda c, s, t: cv2.GaussianBlur(t, (0, 0), 1),
    "teacher, Gaussian blur sigma 2 px": lambda c, s, t: cv2.GaussianBlur(t, (0, 0), 2),
    "teacher at half resolution, upsampled": lambda c, s, t: _half(t),
    "photo with the teacher's Lab statistics": lambda c, s, t: lab_statistics(c, t),
    "photo with the painting's Lab statistics": lambda c, s, t: lab_statistics(c, s),
    "teacher with the photo's Lab statistics": lambda c, s, t: lab_statistics(t, c),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    stick = Yardstick()
    pairs = [(c, s) for c in _images(HELDOUT / "content") for s in _images(HELDOUT / "styles")]
    teacher = stylize_pairs(args.teacher, pairs, args.side)
    photos = [im.resize_max_side(im.read_image(c).rgb, args.side) for c, _ in pairs]
    paintings = [im.read_image(s).rgb for _, s in pairs]
    rows = []
    for name, make in VARIANTS.items():
        outs = [make(c, s, t) for c, s, t in zip(photos, paintings, teacher)]
        gain = score(name, outs, teacher, pairs, stick, args.side)["style_gain"]
        rows.append({"variant": name, "style_gain": gain})
    result = {"pairs": len(pairs), "side": args.side, "yardstick": stick.source, "rows": rows}
    lines = ["| variant of the teacher's output | style gain |", "|---|---|"]
    lines += [f"| {r['variant']} | {r['style_gain']:.2f} |" for r in rows]
    write_table(args.out, "yardstick_sensitivity", result, "\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
