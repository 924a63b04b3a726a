"""Stylizer latency on this CPU: ONNX Runtime vs PyTorch eager, both families, two widths.

A stop-gap until the benchmark suite lands (issue "Benchmark suite"): it times
the `stylizer` graph (content image + cached style code -> image), batch 1,
after warm-up, and writes JSON + Markdown under benchmarks/results/<machine>/.
Weights are seeded random (`random:0`): latency does not depend on their values.

    .venv/bin/python benchmarks/stylize_cpu.py --machine cpu-2core
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from styleship.export.onnx import export_bundle
from styleship.models.checkpoint import save_checkpoint
from styleship.models.registry import get_family
from styleship.runtime.backends import create_backend
from styleship.runtime.bundle import Bundle

MODELS = {
    ("stvae", "narrow"): ({"width": 0.25, "z_dim": 64}, "random:0"),
    ("stvae", "full"): ({"width": 1.0, "z_dim": 256}, "random:0"),
    ("vqvae", "narrow"): ({"width": 0.25}, None),
    ("vqvae", "full"): ({"width": 1.0}, None),
}


def _time(fn, warmup: int, iters: int, min_seconds: float) -> list[float]:
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine", required=True)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--render", action="store_true", help="Only re-render the Markdown table.")
    args = ap.parse_args()
    out = Path(__file__).parent / "results" / args.machine
    if args.render:
        (out / "stylize_cpu.md").write_text(
            render(json.loads((out / "stylize_cpu.json").read_text()))
        )
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, models = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for (family, label), (cfg, vgg) in MODELS.items():
            spec = get_family(family)
            model, weights = spec.create(spec.config_from_dict(cfg), vgg, seed=0)
            name = f"{family}-{label}"
            ckpt = save_checkpoint(Path(tmp) / name, family, model, weights)
            bundle = Bundle.load(export_bundle(ckpt, Path(tmp) / name))
            rng = np.random.default_rng(0)
            style = rng.random((1, 3, 256, 256), dtype=np.float32)
            with torch.no_grad():
                code = {
                    k: v.numpy() for k, v in model.encode_style(torch.from_numpy(style)).items()
                }
            backend = create_backend("ort-cpu")
            backend.load(bundle, "stylizer")
            info = {"model": name, "parameters": sum(p.numel() for p in model.parameters())}
            for size in sizes:
                content = rng.random((1, 3, size, size), dtype=np.float32)
                feed = {"content": content, **code, "alpha": np.ones(1, np.float32)}
                tfeed = {k: torch.from_numpy(v) for k, v in feed.items()}
                with torch.no_grad(), FlopCounterMode(display=False) as flops:
                    model.stylize(**tfeed)
                info[f"gflop_{size}"] = flops.get_total_flops() / 1e9

                def run_torch(tfeed=tfeed, model=model):
                    with torch.no_grad():
                        model.stylize(**tfeed)

                for engine, fn in (
                    ("ort-cpu", lambda f=feed, b=backend: b.run(f)),
                    ("torch-eager", run_torch),
                ):
                    ms = _time(fn, warmup=2, iters=args.iters, min_seconds=2.0)
                    rows.append(
                        {
                            "model": name,
                            "width": cfg["width"],
                            "backend": engine,
                            "size": size,
                            "batch": 1,
                            "iters": len(ms),
                            "p50_ms": statistics.median(ms),
                            "mean_ms": statistics.fmean(ms),
                            "min_ms": min(ms),
                        }
                    )
                    print(rows[-1])
            backend.close()
            models.append(info)
            print(info)
    env = {
        "machine": args.machine,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "weights": "random:0 (latency only)",
    }
    import onnxruntime

    env["onnxruntime"] = onnxruntime.__version__
    out.mkdir(parents=True, exist_ok=True)
    (out / "stylize_cpu.json").write_text(
        json.dumps({"environment": env, "models": models, "rows": rows}, indent=2)
    )
    (out / "stylize_cpu.md").write_text(render(json.loads((out / "stylize_cpu.json").read_text())))
    print(render(json.loads((out / "stylize_cpu.json").read_text())))


def render(data: dict) -> str:
    """Markdown table from the results JSON (the only source of the numbers)."""
    env, rows = data["environment"], data["rows"]
    p50 = {(r["model"], r["size"], r["backend"]): r["p50_ms"] for r in rows}
    lines = [
        f"Stylizer graph latency, batch 1, {env['threads']} threads, seeded random weights "
        f"(latency only), on {env['machine']}; produced by benchmarks/stylize_cpu.py.",
        "",
        "| model | parameters | size | GFLOP | ORT CPU p50 ms | torch eager p50 ms | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for info in data["models"]:
        for size in sorted({r["size"] for r in rows}):
            o, t = p50[info["model"], size, "ort-cpu"], p50[info["model"], size, "torch-eager"]
            lines.append(
                f"| {info['model']} | {info['parameters'] / 1e6:.2f} M | {size}² | "
                f"{info[f'gflop_{size}']:.1f} | {o:.1f} | {t:.1f} | {t / o:.2f}× |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
