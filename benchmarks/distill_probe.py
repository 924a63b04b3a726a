"""A short distillation probe: phase 2 only, from an existing checkpoint, then the held-out score.

A full distill-demo run takes 15-25 minutes on the 2-core build machine; a
400-step fine-tune of a finished student with changed loss weights takes about
four, and says early whether a change moves the held-out numbers
(docs/training.md lists the probes run and what they gave).

    python benchmarks/distill_probe.py vqvae build/train/vqvae-demo/final build/probe \\
        --steps 400 --weights '{"teacher_gram": 100, "gram": 5, "teacher_pixel": 5}'
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from styleship.train.recipes import PRESETS
from styleship.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def _with_hint_adapters(init: Path, stem: Path) -> Path:
    """`init` with seeded, fresh hint adapters (STVAEConfig.hints), saved as `stem`."""
    import torch

    from styleship.models.checkpoint import load_checkpoint, save_checkpoint
    from styleship.models.stvae import hint_adapters

    model, meta = load_checkpoint(init)
    torch.manual_seed(0)
    model.hint_adapters = hint_adapters(model.config.width)
    model.config = type(model.config)(**{**model.config.to_dict(), "hints": True})
    save_checkpoint(stem, meta["family"], model, meta["weights"], meta.get("training", {}))
    return stem


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("family", choices=["stvae", "vqvae"])
    ap.add_argument("init", type=Path, help="checkpoint to start from (stem or .json)")
    ap.add_argument("out", type=Path, help="run folder (replaced)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--weights", default="{}", help="JSON: loss weights over distill-demo's")
    ap.add_argument("--teacher", type=Path, default=ROOT / "build/train/magenta.magenta")
    ap.add_argument(
        "--hints",
        action="store_true",
        help="ST-VAE: add fresh 1x1 hint adapters to the checkpoint (use with a 'hint' weight)",
    )
    args = ap.parse_args(argv)
    weights = {**PRESETS[args.family, "distill-demo"].weights, **json.loads(args.weights)}
    shutil.rmtree(args.out, ignore_errors=True)
    init = args.init
    if args.hints:
        init = _with_hint_adapters(args.init, args.out.parent / f"{args.out.name}-init")
    overrides = {
        "steps": args.steps,
        "phase1": 0.0,
        "weights": weights,
        "checkpoint_every": 10**9,  # only the final one
        "sample_every": 100,
    }
    trainer = Trainer(
        args.family,
        ROOT / "assets/train/content",
        ROOT / "assets/train/styles",
        args.out,
        "random:0",
        preset="distill-demo",
        overrides=overrides,
        seed=0,
        init=init,
        teacher=args.teacher,
    )
    final = trainer.run()
    bundle = args.out / f"probe.{args.family}"
    py = sys.executable
    subprocess.run([py, "-m", "styleship", "export", str(final), "-o", str(bundle)], check=True)
    evaluate = [py, str(ROOT / "benchmarks/distill_eval.py"), "--teacher", str(args.teacher)]
    evaluate += ["--model", f"probe={bundle}", "--out", str(args.out / "eval")]
    return subprocess.run(evaluate, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
