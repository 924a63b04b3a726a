"""Dataset throughput: `styleship batch` on a local Ray against single-process `stylize`.

Makes N photo-like 512² JPEGs (random crops, flips and exposure changes of the
sample and training photos, seeded), then stylizes them all with the same
bundle, style and engine:
- `styleship stylize DIR` (one process, the engine on every core);
- `styleship batch DIR` on a local Ray: 1 actor × 1 core, 2 actors × 1 core,
  and 1 actor × all cores.
Each command runs as a user would run it (a subprocess, a fresh output
folder), timed from start to exit. A one-image `stylize` run gives the
single process's start-up cost; for Ray, the batch's own record splits off
Ray's start-up (`ray_start_s`) from the run. Scaling efficiency is the
2-actor throughput over twice the 1-actor one (both 1 core per actor).
Writes batch.json and batch.md into --out.

    python benchmarks/batch_ray.py                   # 500 images, ~10 minutes on 2 cores
    python benchmarks/batch_ray.py --count 10 --out build/batch-smoke   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "assets/content", ROOT / "assets/train/content"]


def make_photos(folder: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    """`count` size² JPEGs cut from the sample photos; reused when already there."""
    marker = folder / f".made-{count}-{size}-{seed}"
    if marker.is_file():
        return sorted(folder.glob("*.jpg"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    photos = [cv2.imread(str(p)) for d in SOURCES if d.is_dir() for p in sorted(d.glob("*.jpg"))]
    rng = np.random.default_rng(seed)
    for i in range(count):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.5, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = cv2.resize(img[y : y + side, x : x + side], (size, size), cv2.INTER_AREA)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.clip(crop.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"photo{i:04d}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
    marker.touch()
    return sorted(folder.glob("*.jpg"))


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def _run(args: list[str], env: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "styleship", *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed: styleship {' '.join(args)}\n{done.stderr[-2000:]}")
    return wall, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--bundle", type=Path, default=ROOT / "assets/models/stvae-demo.stvae")
    parser.add_argument("--style", type=Path, default=ROOT / "assets/styles/starry_night.jpg")
    parser.add_argument("--backend", default="ort-cpu")
    parser.add_argument("--work", type=Path, default=ROOT / "build/bench-batch")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cpu/batch")
    opts = parser.parse_args()

    cores = len(os.sched_getaffinity(0))
    photos_dir = opts.work / f"photos-{opts.count}-{opts.size}"
    photos = make_photos(photos_dir, opts.count, opts.size)
    env = {**os.environ, "STYLESHIP_CACHE": str(opts.work / "cache")}
    common = ["-m", str(opts.bundle), "-s", str(opts.style), "--backend", opts.backend]

    def fresh(name: str) -> Path:
        path = opts.work / "out" / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    rows = []
    one_wall, _ = _run(["stylize", str(photos[0]), *common, "-o", str(fresh("one"))], env)
    wall, _ = _run(["stylize", str(photos_dir), *common, "-o", str(fresh("stylize"))], env)
    rows.append(
        {
            "runner": "stylize (one process)",
            "actors": None,
            "cores_per_actor": cores,
            "wall_s": round(wall, 2),
            "images_per_s_wall": round(len(photos) / wall, 3),
            "startup_s": round(one_wall, 2),
            "images_per_s_run": round((len(photos) - 1) / max(wall - one_wall, 1e-9), 3),
        }
    )
    print(rows[-1], flush=True)
    for actors, threads in ((1, 1), (2, 1), (1, cores)):
        out = fresh(f"ray-{actors}x{threads}")
        args = ["batch", str(photos_dir), *common, "-o", str(out)]
        wall, report = _run([*args, "--actors", str(actors), "--threads", str(threads)], env)
        if report["ok"] != len(photos):
            sys.exit(f"ray {actors}x{threads}: {report['errors']} images failed")
        rows.append(
            {
                "runner": f"ray batch, {_n(actors, 'actor')} × {_n(threads, 'core')}",
                "actors": actors,
                "cores_per_actor": threads,
                "wall_s": round(wall, 2),
                "images_per_s_wall": round(len(photos) / wall, 3),
                "startup_s": report["ray_start_s"],
                "images_per_s_run": report["images_per_s"],
            }
        )
        print(rows[-1], flush=True)

    by = {(r["actors"], r["cores_per_actor"]): r for r in rows}
    one, two = by[(1, 1)]["images_per_s_run"], by[(2, 1)]["images_per_s_run"]
    single = rows[0]["images_per_s_run"]
    best_ray = max(r["images_per_s_run"] for r in rows[1:])
    result = {
        "count": len(photos),
        "size": opts.size,
        "bundle": opts.bundle.name,
        "backend": opts.backend,
        "cores": cores,
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "rows": rows,
        "scaling_efficiency_2_actors": round(two / (2 * one), 3),
        "best_ray_vs_stylize": round(best_ray / single, 3),
    }
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "batch.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"{len(photos)} photos at {opts.size}², {opts.bundle.name} on {opts.backend}, "
        f"{cores} cores (git {result['git']}).",
        "",
        "| runner | wall s | images/s (wall) | start-up s | images/s (after start-up) |",
        "|---|---|---|---|---|",
        *(
            f"| {r['runner']} | {r['wall_s']} | {r['images_per_s_wall']} | {r['startup_s']} | "
            f"{r['images_per_s_run']} |"
            for r in rows
        ),
        "",
        f"Scaling efficiency, 1 → 2 actors of 1 core: {result['scaling_efficiency_2_actors']:.0%}.",
        f"Best Ray run vs single-process stylize: {result['best_ray_vs_stylize']:.2f}×.",
    ]
    (opts.out / "batch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
