"""Held-out quality of distilled students against their pretrained teacher.

Every (photo, painting) pair of `assets/heldout/` (never trained on, see
docs/training.md) is stylized by the teacher and by each model; Magenta's
pretrained style predictor scores them (styleship/bench/yardstick.py):

- style gain = mean over pairs of (match(O) - floor) / mean over pairs of
  (match(teacher) - floor): 0 is the unstylized photo, 1 the teacher's step;
- content SSIM = mean grayscale SSIM of the output against the photo.

With --time, each bundle's end-to-end `stylize` time at 512x512 is measured
(median of repeated calls, style code cached) on each backend, fp32, one
bundle at a time in this process; run it with nothing else on the CPU.

    python benchmarks/distill_eval.py --teacher build/demo/magenta-0.1.0.magenta \\
        --model stvae=assets/models/stvae-demo.stvae --model vqvae=assets/models/vqvae-demo.vqvae \\
        --out benchmarks/results/distill --time
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from styleship.bench.metrics import gray_ssim
from styleship.bench.report import write_table
from styleship.bench.yardstick import Yardstick
from styleship.runtime import image as im
from styleship.runtime.sheet import contact_sheet
from styleship.runtime.stylizer import Stylizer

HELDOUT = Path(__file__).resolve().parent.parent / "assets" / "heldout"
BEST = "best"
EXTS = (".jpg", ".jpeg", ".png")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTS)


def _stylizer(bundle: Path, backend: str) -> Stylizer:
    """`best`: the engine and precision a user gets by default here; else `backend` fp32."""
    if backend == BEST:
        return Stylizer(bundle, cache_dir=None)
    return Stylizer(bundle, backend=backend, precision="fp32", cache_dir=None)


def stylize_pairs(bundle: Path, pairs, side: int, backend: str = "ort-cpu") -> list[np.ndarray]:
    with _stylizer(bundle, backend) as st:
        return [st.stylize(c, s, max_size=side, tile=None).rgb for c, s in pairs]


def score(name: str, outputs, teacher_outputs, pairs, stick: Yardstick, side: int) -> dict:
    steps, top_steps, ssims, per_pair = [], [], [], []
    for (c, s), out, top in zip(pairs, outputs, teacher_outputs):
        content = im.resize_max_side(im.read_image(c).rgb, side)
        code_s = stick.code(im.read_image(s).rgb)
        floor = stick.cosine(stick.code(content), code_s)
        match = stick.cosine(stick.code(out), code_s)
        top_match = stick.cosine(stick.code(top), code_s)
        ssim = gray_ssim(out, content)
        steps.append(match - floor)
        top_steps.append(top_match - floor)
        ssims.append(ssim)
        per_pair.append(
            {"content": c.name, "style": s.name, "match": match, "floor": floor, "ssim": ssim}
        )
    return {
        "model": name,
        "style_gain": float(np.mean(steps) / np.mean(top_steps)),
        "content_ssim": float(np.mean(ssims)),
        "style_match": float(np.mean([p["match"] for p in per_pair])),
        "floor": float(np.mean([p["floor"] for p in per_pair])),
        "pairs": per_pair,
    }


def time_bundle(bundle: Path, backend: str, calls: int = 15) -> tuple[float, str]:
    """Median seconds of one end-to-end 512x512 stylize, style code cached, and the engine."""
    rng = np.random.default_rng(0)
    photo = im.Image(rng.random((512, 512, 3), dtype=np.float32))
    style = _images(HELDOUT / "styles")[0]
    with _stylizer(bundle, backend) as st:
        engine = f"{st.backend_name} {st.precision}"
        for _ in range(3):
            st.stylize(photo, style, tile=None)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            st.stylize(photo, style, tile=None)
            times.append(time.perf_counter() - t0)
    return statistics.median(times), engine


def write_sheet(path: Path, models, outputs, contents, styles) -> None:
    """Held-out photos down the side, one row per model in `models` order for each photo."""
    heads, grid = [], []
    for i, c in enumerate(contents):
        for name, _ in models:
            heads.append(im.read_image(c).rgb)
            grid.append(outputs[name][i * len(styles) : (i + 1) * len(styles)])
    sheet = contact_sheet(heads, [im.read_image(s).rgb for s in styles], grid, cell=160)
    im.write_image(path, im.Image(sheet))


def _ms_cell(row: dict, backend: str) -> str:
    if backend not in row.get("ms", {}):
        return "-"
    ms = f"{row['ms'][backend]:.1f}"
    return f"{ms} ({row['engines'][backend]})" if backend == BEST else ms


def markdown(result: dict) -> str:
    backends = result.get("timing_backends", [])
    head = "| model | style gain | content SSIM | style match (floor) |"
    head += "".join(f" ms @512² {b if b == BEST else b + ' fp32'} |" for b in backends)
    lines = [head, "|---" * (4 + len(backends)) + "|"]
    for r in result["rows"]:
        cells = [
            r["model"],
            f"{r['style_gain']:.2f}",
            f"{r['content_ssim']:.3f}",
            f"{r['style_match']:.3f} ({r['floor']:.3f})",
        ]
        cells += [_ms_cell(r, b) for b in backends]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--model", action="append", default=[], help="NAME=BUNDLE")
    ap.add_argument("--side", type=int, default=384, help="long side of the held-out photos")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--time", action="store_true", help="also time each bundle at 512x512")
    ap.add_argument(
        "--backends",
        default=f"{BEST},openvino,ort-cpu",
        help=f"engines to time; {BEST}: what stylize picks by default on this machine",
    )
    ap.add_argument(
        "--default-path",
        action="store_true",
        help="also score each model's outputs from the default engine (rows NAME@default)",
    )
    ap.add_argument("--sheet", type=Path, help="write a contact sheet of all outputs here")
    args = ap.parse_args(argv)
    contents, styles = _images(HELDOUT / "content"), _images(HELDOUT / "styles")
    pairs = [(c, s) for c in contents for s in styles]
    stick = Yardstick()
    models = [("teacher", args.teacher)] + [
        (spec.split("=", 1)[0], Path(spec.split("=", 1)[1])) for spec in args.model
    ]
    outputs = {name: stylize_pairs(path, pairs, args.side) for name, path in models}
    rows = [score(n, outputs[n], outputs["teacher"], pairs, stick, args.side) for n, _ in models]
    if args.default_path:  # what users get: each model on its default engine, same yardstick
        for name, path in models:
            out = stylize_pairs(path, pairs, args.side, BEST)
            rows.append(score(f"{name}@default", out, outputs["teacher"], pairs, stick, args.side))
    if args.sheet:
        write_sheet(args.sheet, models, outputs, contents, styles)
    backends = args.backends.split(",") if args.time else []
    for (_, path), row in zip(models, rows):
        row["bundle"] = str(path)
        timed = {b: time_bundle(path, b) for b in backends}
        row["ms"] = {b: 1000 * t for b, (t, _) in timed.items()}
        row["engines"] = {b: engine for b, (_, engine) in timed.items()}
    result = {
        "pairs": len(pairs),
        "side": args.side,
        "yardstick": stick.source,
        "machine": platform.processor() or platform.machine(),
        "timing_backends": backends,
        "rows": rows,
    }
    write_table(args.out, "heldout", result, markdown(result))
    sys.stdout.write(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
