"""One training loop for both families: phases, AdamW, warm-up + cosine LR,
gradient clipping, mixed precision on GPU, atomic checkpoints with exact resume.

A run directory holds `checkpoints/step_NNNNNN.{safetensors,json,state.safetensors}`
(the last K kept; the .json is written last, so its presence marks a complete
checkpoint), `final.{safetensors,json}`, `log.csv`, `samples/*.png` and
`summary.json`. Every checkpoint is a normal model checkpoint that
`styleship export` accepts; the `.state` file adds optimizer and RNG state.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from styleship import __version__, _atomic
from styleship.errors import InputError, ModelError
from styleship.models.checkpoint import load_checkpoint, save_checkpoint
from styleship.models.registry import get_family
from styleship.runtime import image as im
from styleship.train.data import BatchMaker, FolderDataset
from styleship.train.losses import LossNetwork
from styleship.train.recipes import PRESETS, SLOW_LR, Preset, phases_for

CLIP_NORM = 1.0
WARMUP = 0.05


@dataclass
class StepInfo:
    step: int
    total: int
    phase: str
    lr: float
    terms: dict[str, float]
    seconds: float


def distilled_note(teacher: str, warm: bool = False) -> str:
    """The manifest note of a student distilled with random VGG features for its own terms
    (`warm`: its layers start as the teacher's, as weights.init says)."""
    origin = "started from the layers of and distilled from" if warm else "distilled from"
    return (
        f"{origin} the pretrained teacher {teacher}; its own loss terms use seeded "
        "random VGG-19 features (pretrained VGG weights unavailable)"
    )


def lr_at(base: float, i: int, n: int) -> float:
    """Linear warm-up over the first 5 % of a phase, then cosine down to 10 %."""
    warm = max(1, int(WARMUP * n))
    if i < warm:
        return base * (i + 1) / warm
    t = (i - warm) / max(1, n - warm)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _opt_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    state = opt.state_dict()
    tensors = {f"opt.{i}.{k}": v for i, st in state["state"].items() for k, v in st.items()}
    return tensors, state["param_groups"]


def _load_opt(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]
) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} for g in groups]
    opt.load_state_dict({"state": state, "param_groups": groups})


class Trainer:
    def __init__(
        self,
        family: str,
        content: Path,
        style: Path,
        out_dir: Path,
        vgg: str | None,
        preset: str = "demo",
        overrides: dict | None = None,
        seed: int = 0,
        workers: int = 2,
        device: str | None = None,
        resume: bool = False,
        init: Path | None = None,
        teacher: Path | None = None,
    ) -> None:
        self.spec = get_family(family)
        if (family, preset) not in PRESETS:
            names = sorted(p for f, p in PRESETS if f == family)
            raise InputError(f"no preset {preset!r} for {family} (have {', '.join(names)})")
        self.preset: Preset = replace(PRESETS[family, preset], **(overrides or {}))
        self.preset_name, self.seed = preset, seed
        self.out = Path(out_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        p = self.preset
        if min(p.size, p.batch, p.steps) < 1 or p.size % 8:
            raise InputError("steps and batch must be positive, size a positive multiple of 8")
        torch.manual_seed(seed)
        random_vgg = vgg is not None and vgg.startswith("random:")
        self.loss_net = LossNetwork(vgg, p.loss_width if random_vgg else 1.0).to(self.device)
        self.content = FolderDataset(content)
        self.style = FolderDataset(style)
        self.batches = (
            BatchMaker(self.content, p.size, p.batch, seed, 0, workers),
            BatchMaker(self.style, p.size, p.batch, seed, 1, workers),
        )
        self.start, state = 0, None
        if resume:
            self.model, meta, state = self._load_latest()
            self.start, self.weights = meta["training"]["step"], meta["weights"]
        else:
            if self.out.exists() and any(self.out.iterdir()):
                raise InputError(f"{self.out} is not empty: pass --resume to continue that run")
            if init is not None:  # fine-tune: e.g. an imported official checkpoint
                self.model, init_meta = load_checkpoint(init)
                if init_meta["family"] != family:
                    raise InputError(f"{init} is a {init_meta['family']} checkpoint, not {family}")
                created = {"from_checkpoint": str(init), "weights": init_meta["weights"]}
            else:
                cfg = self.spec.config_from_dict({"width": p.width, **p.config})
                vgg_for_model = vgg if family == "stvae" else None
                images = [*self.content.files, *self.style.files]
                warm = self.spec.warm_start(cfg, teacher and Path(teacher), images, seed)
                self.model, created = warm or self.spec.create(cfg, vgg_for_model, seed)
            note = (
                (
                    "demo trained with seeded random VGG-19 features (pretrained weights "
                    "unavailable): not comparable to a pretrained-VGG model"
                )
                if random_vgg
                else None
            )
            self.weights = {
                "untrained": False,
                "note": note,
                "init": created,
                "loss_network": self.loss_net.provenance,
            }
        self.teacher = self._teacher(teacher)
        if not resume:
            self.weights["teacher"] = self.teacher.provenance if self.teacher else None
            if self.teacher and random_vgg:
                warm = "teacher" in self.weights["init"]  # warm_start's provenance names it
                self.weights["note"] = distilled_note(self.teacher.provenance["bundle"], warm)
        self.model.to(self.device)
        self.phases = phases_for(family, self.model.config)
        self._resume_state = state
        self.phase1_steps = round(p.phase1 * p.steps)
        (self.out / "checkpoints").mkdir(parents=True, exist_ok=True)
        (self.out / "samples").mkdir(exist_ok=True)

    def _teacher(self, bundle: Path | None):
        """The distillation teacher, with minted styles added to the style set."""
        distils = "teacher_pixel" in self.preset.weights
        if bundle is None:
            if distils:
                raise InputError(f"preset {self.preset_name} distils: pass --teacher BUNDLE")
            return None
        if not distils:
            raise InputError(
                f"preset {self.preset_name} has no teacher terms: use a distill preset "
                "(distill-demo, distill) with --teacher"
            )
        from styleship.train.teacher import Teacher

        teacher = Teacher(bundle)
        if self.preset.minted_styles:
            minted = teacher.mint_styles(
                self.content.files,
                self.style.files,
                self.preset.minted_styles,
                self.out / "minted_styles",
                self.seed,
            )
            self.style.add_files(minted)
        return teacher

    # -- checkpoints -------------------------------------------------------
    def _load_latest(self):
        from safetensors.torch import load_file

        ckdir = self.out / "checkpoints"
        done = sorted(ckdir.glob("step_*.json")) if ckdir.is_dir() else []
        if not done:
            raise InputError(f"nothing to resume in {self.out}: no complete checkpoint")
        stem = done[-1].with_suffix("")
        model, meta = load_checkpoint(stem)
        try:
            state = load_file(stem.with_name(stem.name + ".state.safetensors"))
        except Exception as exc:  # safetensors raises its own error types
            raise ModelError(f"{stem}: training state unreadable ({exc})") from None
        training = meta["training"]
        return (
            model,
            meta,
            {
                "tensors": state,
                "groups": training["optimizer"],
                "phase_index": training["phase_index"],
            },
        )

    def _save(self, step: int, phase: int, opt, terms: dict) -> Path:
        from safetensors.torch import save

        stem = self.out / "checkpoints" / f"step_{step:06d}"
        tensors, groups = _opt_tensors(opt)
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        _atomic.write_bytes(stem.with_name(stem.name + ".state.safetensors"), save(tensors))
        save_checkpoint(
            stem, self.spec.name, self.model, self.weights, self._meta(step, phase, terms, groups)
        )
        for old in sorted((self.out / "checkpoints").glob("step_*.json"))[: -self.preset.keep]:
            for f in old.parent.glob(old.stem + ".*"):
                f.unlink()
        return stem

    def _codes_in_use(self) -> int | None:
        """Codebook usage, as the family's own summary reports it (None without a codebook)."""
        return self.spec.summary(self.model).get("codes_used_in_training")

    def _meta(self, step: int, phase: int, terms: dict, groups: list[dict]) -> dict:
        return {
            "step": step,
            "phase": self.phases[phase].name,
            "phase_index": phase,
            "preset": self.preset_name,
            "settings": asdict(self.preset),
            "seed": self.seed,
            "optimizer": groups,
            "losses": terms,
            "command": " ".join(["styleship", *sys.argv[1:]]),
            "data": {
                "content_dir": str(self.content.root),
                "style_dir": str(self.style.root),
                "content": len(self.content),
                "style": len(self.style),
                "minted_styles": self.preset.minted_styles if self.teacher else 0,
                "skipped": len(self.content.skipped) + len(self.style.skipped),
            },
            "codes_in_use": self._codes_in_use(),
            "versions": {"styleship": __version__, "torch": torch.__version__},
            "device": str(self.device),
        }

    # -- the loop ------------------------------------------------------------
    def _phase_setup(self, index: int):
        phase = self.phases[index]
        self.model.requires_grad_(False)
        params = phase.trainable(self.model)
        for name in self.preset.also_train[index]:
            known = {id(q) for q in params}
            params += [q for q in getattr(self.model, name).parameters() if id(q) not in known]
        slow = [q for name in phase.slow for q in getattr(self.model, name).parameters()]
        for param in (*params, *slow):
            param.requires_grad_(True)
        groups = [{"params": params, "lr_scale": 1.0}]
        groups += [{"params": slow, "lr_scale": SLOW_LR}] if slow else []
        opt = torch.optim.AdamW(groups, lr=self.preset.lr, weight_decay=0.0)
        return phase, [*params, *slow], opt

    def _sample(self, step: int, c, s, out) -> None:
        n = min(4, c.shape[0])
        rows = [
            np.concatenate(
                [t[i].detach().float().cpu().numpy().transpose(1, 2, 0) for t in (c, s, out)],
                axis=1,
            )
            for i in range(n)
        ]
        grid = np.clip(np.concatenate(rows, axis=0), 0, 1)
        im.write_image(self.out / "samples" / f"step_{step:06d}.png", im.Image(grid))

    def run(self, on_step: Callable[[StepInfo], None] | None = None) -> Path:
        p, total = self.preset, self.preset.steps
        log_path = self.out / "log.csv"
        rows = []
        if self.start and log_path.is_file():
            with log_path.open() as fh:
                rows = [r for r in csv.reader(fh)][1:]
            rows = [r for r in rows if int(r[0]) <= self.start]
        phase_index, opt, params = None, None, []
        terms_f: dict[str, float] = {}
        use_amp = self.device.type == "cuda"
        started = time.perf_counter()
        for step in range(self.start, total):
            index = 0 if step < self.phase1_steps else 1
            if index != phase_index:
                phase, params, opt = self._phase_setup(index)
                phase_index = index
                resumed = self._resume_state
                if resumed is not None:
                    # A checkpoint at the phase boundary holds the finished phase's
                    # optimizer; the next phase starts a fresh one, as an unbroken run does.
                    if resumed["phase_index"] == index:
                        _load_opt(opt, resumed["tensors"], resumed["groups"])
                    torch.set_rng_state(resumed["tensors"]["rng.torch"])
                    if torch.cuda.is_available():
                        cuda = [
                            v
                            for k, v in sorted(resumed["tensors"].items())
                            if k.startswith("rng.cuda.")
                        ]
                        torch.cuda.set_rng_state_all(cuda)
                    self._resume_state = None
            self.model.train()
            for module in phase.frozen_eval(self.model):
                module.eval()
            first, length = (
                (0, self.phase1_steps)
                if index == 0
                else (self.phase1_steps, total - self.phase1_steps)
            )
            lr = lr_at(p.lr, step - first, length)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"]
            c_np, s_np = self.batches[0](step), self.batches[1](step)
            c, s = torch.from_numpy(c_np).to(self.device), torch.from_numpy(s_np).to(self.device)
            t0 = time.perf_counter()
            target = None
            if self.teacher is not None and phase.teacher:  # the teacher runs on CPU arrays
                target = self.teacher.targets(c_np, s_np, "hint" in p.weights, self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, terms, out = phase.loss(self.model, self.loss_net, c, s, p, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
            opt.step()
            terms_f = {
                "total": float(loss.detach()),
                **{k: float(v.detach()) for k, v in terms.items()},
            }
            rows += [
                [step + 1, phase.name, name, f"{value:.6g}"] for name, value in terms_f.items()
            ]
            if on_step:
                on_step(
                    StepInfo(step + 1, total, phase.name, lr, terms_f, time.perf_counter() - t0)
                )
            done = step + 1
            if done % p.sample_every == 0 or done == total:
                self._sample(done, c, s, out)
            if done % p.checkpoint_every == 0 or done == total or done == self.phase1_steps:
                self._save(done, index, opt, terms_f)
                self._write_log(log_path, rows)
        elapsed = time.perf_counter() - started
        final = self._finish(total, terms_f, elapsed)
        self.batches[0].close()
        self.batches[1].close()
        if self.teacher is not None:
            self.teacher.close()
        return final

    def _write_log(self, path: Path, rows: list) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["step", "phase", "name", "value"])
        writer.writerows(rows)
        _atomic.write_text(path, buf.getvalue())

    def _finish(self, total: int, terms: dict, elapsed: float) -> Path:
        last = self.out / "checkpoints" / f"step_{total:06d}"
        final = self.out / "final"
        for suffix in (".safetensors", ".json"):
            shutil.copyfile(last.with_name(last.name + suffix), final.with_name("final" + suffix))
        steps_run = total - self.start
        summary = {
            "family": self.spec.name,
            "steps": total,
            "steps_this_run": steps_run,
            "seconds_per_step": elapsed / steps_run if steps_run else None,
            "final_losses": terms,
            "checkpoint": str(final),
            "device": str(self.device),
            "codes_in_use": self._codes_in_use(),
        }
        _atomic.write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        return final
