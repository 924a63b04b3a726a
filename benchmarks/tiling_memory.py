"""Peak memory of tiled stylization on an 8K photo, one fresh process per run.

Each run is `styleship stylize` in its own process, so its peak RSS (from
wait4's rusage) is the whole cost of the command: interpreter, engine, image
buffers and activations. It writes benchmarks/results/cpu/tiling/memory.{json,md}.

    python benchmarks/tiling_memory.py [--bundle assets/models/stvae-demo.stvae]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
RUNS = [  # (label, width, height, tile)
    ("4K UHD, untiled", 3840, 2160, "0"),
    ("4K UHD, tile 1024", 3840, 2160, "1024"),
    ("8K UHD, tile 1024", 7680, 4320, "1024"),
    ("8K UHD, tile 512", 7680, 4320, "512"),
]


def run(bundle: Path, style: Path, photo: Path, tile: str, out: Path) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one stylize command."""
    cmd = [
        sys.executable,
        "-m",
        "styleship",
        "stylize",
        str(photo),
        "-m",
        str(bundle),
        "-s",
        str(style),
        "-o",
        str(out),
        "--tile",
        tile,
        "--backend",
        "ort-cpu",
        "--max-pixels",
        "50000000",
        "--json",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stylize failed: {proc.stderr.read().decode()[-500:]}")
    return usage.ru_maxrss / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "assets/models/stvae-demo.stvae")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cpu/tiling")
    args = parser.parse_args()
    style = ROOT / "assets/styles/starry_night.jpg"
    src = cv2.imread(str(ROOT / "assets/content/astronaut.jpg"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, w, h, tile in RUNS:
            photo = Path(tmp) / f"photo_{w}x{h}.jpg"
            if not photo.exists():
                cv2.imwrite(str(photo), cv2.resize(src, (w, h), interpolation=cv2.INTER_CUBIC))
            peak, wall = run(args.bundle, style, photo, tile, Path(tmp))
            rows.append(
                {
                    "run": label,
                    "width": w,
                    "height": h,
                    "tile": int(tile),
                    "peak_rss_mib": round(peak),
                    "seconds": round(wall, 1),
                }
            )
            print(f"{label}: peak RSS {peak:,.0f} MiB, {wall:.1f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "bundle": args.bundle.name,
        "backend": "ort-cpu",
        "overlap": 64,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "runs": rows,
    }
    (args.out / "memory.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["| run | pixels | peak RSS MiB | seconds |", "|---|---|---|---|"]
    lines += [
        f"| {r['run']} | {r['width'] * r['height'] / 1e6:.1f} MP | {r['peak_rss_mib']:,} | "
        f"{r['seconds']} |"
        for r in rows
    ]
    (args.out / "memory.md").write_text(
        f"# Tiled stylization memory ({args.bundle.name}, ort-cpu, one process per run)\n\n"
        + "\n".join(lines)
        + "\n"
    )


if __name__ == "__main__":
    main()
