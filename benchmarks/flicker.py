"""Flicker with and without the temporal blend, on synthetic clips made from a sample photo.

The clip is a still photo (256×192) with a disc and a square moving across it,
16 frames. It is used once clean and once with Gaussian sensor noise
(σ = 0.01). Flicker is measured over the pixels that the clean clip leaves
unchanged. Writes benchmarks/results/cpu/video/flicker.{json,md}.

    python benchmarks/flicker.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2

from styleship.runtime import image as im
from styleship.runtime import video
from styleship.runtime.stylizer import Stylizer

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ["stvae-demo.stvae", "vqvae-demo.vqvae"]
STABILITY = [0.0, 0.5, 0.8]


def main() -> None:
    photo = im.read_image(ROOT / "assets/content/chelsea.jpg").rgb
    photo = cv2.resize(photo, (256, 192), interpolation=cv2.INTER_AREA)
    clips = {
        "clean": video.moving_shapes_clip(photo, 16),
        "noise 0.01": video.moving_shapes_clip(photo, 16, noise=0.01),
    }
    rows = []
    for name in BUNDLES:
        with Stylizer(
            ROOT / "assets/models" / name, "ort-cpu", precision="fp32", cache_dir=None
        ) as st:
            code = st.style_code(ROOT / "assets/styles/starry_night.jpg")
            for clip_name, clip in clips.items():
                for s in STABILITY:
                    start = time.perf_counter()
                    outs = list(video.stylize_frames(st, clip, code, stability=s))
                    ms = (time.perf_counter() - start) / len(clip) * 1e3
                    value = video.flicker(clips["clean"], outs) * 255
                    rows.append(
                        {
                            "bundle": name,
                            "clip": clip_name,
                            "stability": s,
                            "flicker_255": round(value, 2),
                            "ms_per_frame": round(ms, 1),
                        }
                    )
                    print(rows[-1], flush=True)
    out = ROOT / "benchmarks/results/cpu/video"
    out.mkdir(parents=True, exist_ok=True)
    (out / "flicker.json").write_text(json.dumps({"backend": "ort-cpu", "rows": rows}, indent=1))
    lines = [
        "| bundle | clip | " + " | ".join(f"stability {s}" for s in STABILITY) + " |",
        "|---|---|" + "---|" * len(STABILITY),
    ]
    for name in BUNDLES:
        for clip_name in clips:
            cells = [
                r["flicker_255"] for r in rows if r["bundle"] == name and r["clip"] == clip_name
            ]
            lines.append(
                f"| {name} | {clip_name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |"
            )
    (out / "flicker.md").write_text(
        "# Flicker in static regions (1/255 units; 16 frames, 256×192, ort-cpu)\n\n"
        + "\n".join(lines)
        + "\n"
    )


if __name__ == "__main__":
    main()
