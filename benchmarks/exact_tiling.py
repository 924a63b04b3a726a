"""Exact tiling against untiled and against the old blended tiles (docs/tiling.md).

quality: per bundle at 2048×1536 and 2048², 768-pixel tiles: PSNR vs untiled,
the visible-block check (the mean colour difference from untiled per tile,
compared with each neighbouring tile's: a tone step between tiles shows as a
large value), and seconds; plus a picture of one tile corner (untiled |
blended | exact) in docs/images/.
large: `styleship stylize` with default options on 12, 33 and 100 MP images,
one fresh process each: seconds, peak RSS, and what `--tile auto` chose.

    python benchmarks/exact_tiling.py quality BUNDLE... [--out benchmarks/results/cpu/tiling]
    python benchmarks/exact_tiling.py large BUNDLE [--out ...]

Bundles without a split are given one in a temporary copy (export/split.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from styleship import _atomic
from styleship.compare import psnr
from styleship.runtime import exact_tiling as et
from styleship.runtime import image as im
from styleship.runtime.stylizer import Stylizer

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "content" / "coffee.jpg"
STYLE = ROOT / "assets" / "styles" / "starry_night.jpg"
TILE = 768


def _with_split(bundle: Path, tmp: Path) -> Path:
    if "split" in json.loads((bundle / "manifest.json").read_text()):
        return bundle
    from styleship.export.split import upgrade

    copy = Path(shutil.copytree(bundle, tmp / bundle.name))
    upgrade(copy, log=lambda m: None)
    return copy


def _without_split(bundle: Path, tmp: Path) -> Path:
    copy = Path(shutil.copytree(bundle, tmp / f"blend-{bundle.name}"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.pop("split", None)
    manifest["graphs"] = {k: v for k, v in manifest["graphs"].items() if not k.startswith("split_")}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def block_step(out: np.ndarray, ref: np.ndarray, tile: int) -> float:
    """Mean over neighbouring tile pairs of the step in their mean difference from untiled
    (1/255 units, largest over colour channels)."""
    h, w = ref.shape[:2]
    boxes = et.interiors(h, w, tile, 8)
    means = {
        b: (out[b[0] : b[1], b[2] : b[3]] - ref[b[0] : b[1], b[2] : b[3]]).mean((0, 1))
        for b in boxes
    }
    steps = []
    for a in boxes:
        for b in boxes:
            touching = (a[1] == b[0] and a[2] == b[2]) or (a[3] == b[2] and a[0] == b[0])
            if touching:
                steps.append(float(np.abs(means[a] - means[b]).max()))
    return 255 * float(np.mean(steps)) if steps else 0.0


def _style(st: Stylizer):
    return STYLE if st.bundle.has_style_input else st.bundle.style_bank.names[0]


def quality(bundles: list[Path], out: Path) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bundle in bundles:
            exact_b = _with_split(bundle, Path(tmp))
            blend_b = _without_split(exact_b, Path(tmp))
            for h, w in ((1536, 2048), (2048, 2048)):
                rgb = cv2.resize(im.read_image(PHOTO).rgb, (w, h), interpolation=cv2.INTER_AREA)
                img = im.Image(rgb)
                outs, secs = {}, {}
                for mode, b, tile in (
                    ("untiled", exact_b, 0),
                    ("blend", blend_b, TILE),
                    ("exact", exact_b, TILE),
                ):
                    with Stylizer(b, "ort-cpu", precision="fp32", cache_dir=None) as st:
                        st.stylize(img, _style(st), max_size=256, tile=0)  # load and warm
                        t = time.perf_counter()
                        outs[mode] = st.stylize(img, _style(st), tile=tile).rgb
                        secs[mode] = time.perf_counter() - t
                        assert tile == 0 or st.last_tiling["mode"] == mode, st.last_tiling
                ref = outs["untiled"]
                for mode in ("blend", "exact"):
                    rows.append(
                        {
                            "bundle": bundle.name,
                            "size": f"{w}x{h}",
                            "tile": TILE,
                            "mode": mode,
                            "psnr_db": round(psnr(outs[mode], ref), 1),
                            "mean_abs_255": round(255 * float(np.abs(outs[mode] - ref).mean()), 3),
                            "block_step_255": round(block_step(outs[mode], ref, TILE), 3),
                            "seconds": round(secs[mode], 2),
                            "untiled_seconds": round(secs["untiled"], 2),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
                if (h, w) == (1536, 2048) and bundle is bundles[0]:
                    _picture(outs, TILE, ROOT / "docs" / "images" / "tiling_boundary.png")
    return rows


def _picture(outs: dict, tile: int, path: Path) -> None:
    """A 256² crop around the first tile corner: untiled | blended | exact."""
    h, w = outs["untiled"].shape[:2]
    _, y1, _, x1 = et.interiors(h, w, tile, 8)[0]
    crop = [
        outs[m][y1 - 128 : y1 + 128, x1 - 128 : x1 + 128] for m in ("untiled", "blend", "exact")
    ]
    gap = np.ones((256, 8, 3), np.float32)
    im.write_image(path, im.Image(np.concatenate([crop[0], gap, crop[1], gap, crop[2]], axis=1)))


def large(bundle: Path, out: Path) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _with_split(bundle, Path(tmp))
        for label, (w, h) in (
            ("12 MP", (4000, 3000)),
            ("33 MP (8K)", (7680, 4320)),
            ("100 MP", (11547, 8660)),
        ):
            src = Path(tmp) / f"{w}x{h}.jpg"
            bgr = cv2.resize(cv2.imread(str(PHOTO)), (w, h), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(src), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
            del bgr
            cmd = [
                sys.executable,
                "-m",
                "styleship",
                "stylize",
                str(src),
                "-m",
                str(bundle),
                "-s",
                str(STYLE),
                "-o",
                str(Path(tmp) / "out.jpg"),
                "--backend",
                "ort-cpu",
                "--json",
            ]
            t = time.perf_counter()
            # wait4 gives this child's own peak RSS (RUSAGE_CHILDREN is the largest of all
            # children so far, so a smaller image after a larger one would inherit its peak).
            with open(Path(tmp) / "stdout", "w+") as so, open(Path(tmp) / "stderr", "w+") as se:
                proc = subprocess.Popen(cmd, stdout=so, stderr=se, text=True)
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                so.seek(0), se.seek(0)
                stdout, stderr = so.read(), se.read()
            secs = time.perf_counter() - t
            peak = usage.ru_maxrss * 1024
            if proc.returncode:
                raise SystemExit(stderr)
            tiling = json.loads(stdout)["results"][0]["tiling"]
            rows.append(
                {
                    "image": label,
                    "pixels": w * h,
                    "seconds": round(secs, 1),
                    "peak_rss_mib": round(peak / 2**20),
                    "tiling": tiling,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["quality", "large"])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu" / "tiling")
    args = ap.parse_args()
    rows = (
        quality(args.bundles, args.out)
        if args.what == "quality"
        else large(args.bundles[0], args.out)
    )
    _atomic.write_text(args.out / f"exact_{args.what}.json", json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
