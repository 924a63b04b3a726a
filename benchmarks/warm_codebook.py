"""What the warm start's codebook alone costs: the untouched teacher decoder on k-means-quantised
teacher features, scored on the held-out pairs like benchmarks/distill_eval.py.

No training: the contract layers' features of the training images (what
`--preset warm-demo` clusters) are k-means'd into K codes, every held-out photo's
features are replaced by their nearest codes, and the teacher's own decoder
renders them with the painting's code. Style gain and content SSIM say how much
of the teacher survives the discrete bottleneck before any fine-tuning.

    python benchmarks/warm_codebook.py --teacher build/train/magenta.magenta \\
        --out benchmarks/results/distill/warm-start
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from styleship.bench.metrics import gray_ssim
from styleship.bench.report import write_table
from styleship.bench.yardstick import Yardstick
from styleship.models.magenta_net import load_magenta
from styleship.models.quantizer import VectorQuantizer
from styleship.models.vqvae_warm import contract_features
from styleship.runtime import image as im

ROOT = Path(__file__).resolve().parent.parent


def _nchw(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)[None]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--codes", default="256,512,1024")
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    contract, decoder, predictor = load_magenta(args.teacher)
    train = [*sorted((ROOT / "assets/train/content").glob("*.jpg"))]
    train += sorted((ROOT / "assets/train/styles").glob("*.jpg"))
    feats = contract_features(contract, train)
    photos = sorted((ROOT / "assets/heldout/content").glob("*.jpg"))
    paintings = sorted((ROOT / "assets/heldout/styles").glob("*.jpg"))
    stick = Yardstick()
    rows = []
    with torch.no_grad():
        codes = {p: predictor(_nchw(im.read_image(p).rgb)) for p in paintings}
        for k in [0, *map(int, args.codes.split(","))]:  # 0: the teacher itself
            q = VectorQuantizer(k or 1, feats.shape[1], euclidean=True)
            if k:
                torch.manual_seed(0)
                q.kmeans_init(feats)
            steps, tops, ssims = [], [], []
            for photo in photos:
                x = im.resize_max_side(im.read_image(photo).rgb, args.side)
                x = np.ascontiguousarray(x[: x.shape[0] // 4 * 4, : x.shape[1] // 4 * 4])
                f = contract(_nchw(x))
                fq = q.quantize(f)[0] if k else f
                for p in paintings:
                    top = decoder(f, codes[p])[0].numpy().transpose(1, 2, 0)
                    out = decoder(fq, codes[p])[0].numpy().transpose(1, 2, 0)
                    ref = stick.code(im.read_image(p).rgb)
                    floor = stick.cosine(stick.code(x), ref)
                    steps.append(stick.cosine(stick.code(out), ref) - floor)
                    tops.append(stick.cosine(stick.code(top), ref) - floor)
                    ssims.append(gray_ssim(out, x))
            rows.append(
                {
                    "codes": k or None,
                    "style_gain": float(np.mean(steps) / np.mean(tops)),
                    "content_ssim": float(np.mean(ssims)),
                }
            )
    result = {"kmeans_positions": int(feats.shape[0]), "train_images": len(train), "rows": rows}
    lines = ["| codes | style gain | content SSIM |", "|---|---|---|"]
    lines += [
        f"| {r['codes'] or 'none (the teacher)'} | {r['style_gain']:.2f} | "
        f"{r['content_ssim']:.3f} |"
        for r in rows
    ]
    write_table(args.out, "codebook", result, "\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
