"""Measure one case of a suite, and the Gatys baseline at one size.

A case that cannot run here (engine not installed, no GPU, precision the
engine lacks) becomes a `skipped` row with the reason; one that breaks
becomes a `failed` row with the error, so the suite always finishes.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from styleship import __version__
from styleship._hashing import sha256_json
from styleship.bench.config import BenchCase, RunBlock, Suite
from styleship.bench.metrics import LossScorer, quality
from styleship.bench.timing import PeakMemory, measure
from styleship.errors import BackendUnavailable, StyleshipError
from styleship.runtime import image as im
from styleship.runtime.backends import available_backends, create_backend, default_device
from styleship.runtime.bundle import Bundle

STYLE_SIZE = 512  # the long side style codes are computed at (as the Stylizer does)
Log = Callable[[str], None]


def _square(rgb: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def prepare_model(suite: Suite, model_id: str, work_dir: Path, log: Log) -> Bundle:
    """A shipped bundle as is, or a family+config built with seeded weights and exported once.

    Exported bundles are cached under `work_dir` by a hash of what defines them.
    """
    spec = suite.models[model_id]
    if spec.bundle is not None:
        return Bundle.load(spec.bundle)
    from styleship.export.onnx import export_bundle
    from styleship.models.checkpoint import save_checkpoint
    from styleship.models.registry import get_family

    family = get_family(spec.family)
    key = sha256_json(
        {"family": spec.family, "config": spec.config, "vgg": spec.vgg, "seed": suite.seed}
        | {"styleship": __version__, "precisions": ["fp32", "int8"], "int8_min_psnr": 30.0}
    )[:16]
    path = work_dir / f"{model_id}-{key}.{family.name}"
    if (path / "manifest.json").is_file():
        return Bundle.load(path)
    log(f"building {model_id} (seeded random weights) and exporting it")
    model, weights = family.create(family.config_from_dict(spec.config), spec.vgg, suite.seed)
    ckpt = save_checkpoint(work_dir / f"{model_id}-{key}", family.name, model, weights)
    return Bundle.load(export_bundle(ckpt, path, force=True, int8=True))


def _device(backend: str, suite: Suite) -> str:
    if backend.startswith("torch"):
        return "cuda:0" if suite.device == "cuda" else "cpu"
    return default_device(backend)


class _Images:
    """The suite's content and style photos at each size, and encoded bytes for end to end."""

    def __init__(self, suite: Suite) -> None:
        self.content = im.read_image(suite.content).rgb
        self.style = im.read_image(suite.style).rgb
        self.style_code_input = im.resize_max_side(self.style, STYLE_SIZE)

    def content_at(self, size: int) -> np.ndarray:
        return _square(self.content, size)

    def style_at(self, size: int) -> np.ndarray:
        return _square(self.style, size)

    def content_jpeg(self, size: int) -> bytes:
        return im.encode(im.Image(self.content_at(size)), ".jpg")


class Runner:
    def __init__(self, suite: Suite, work_dir: Path, log: Log) -> None:
        self.suite = suite
        self.work_dir = work_dir
        self.log = log
        self.images = _Images(suite)
        self.bundles: dict[str, Bundle] = {}
        self.codes: dict[str, dict[str, np.ndarray]] = {}
        self.refs: dict[
            tuple, tuple[str, np.ndarray]
        ] = {}  # (model, size, style, backend|*) -> out
        self.status = available_backends()
        self._scorer: LossScorer | None = None
        self._scorer_size: int | None = None

    # -- shared pieces -------------------------------------------------------
    def bundle(self, model_id: str) -> Bundle:
        if model_id not in self.bundles:
            self.bundles[model_id] = prepare_model(self.suite, model_id, self.work_dir, self.log)
        return self.bundles[model_id]

    def scorer(self, size: int) -> LossScorer:
        if self._scorer is None:
            device = "cuda" if self.suite.device == "cuda" else "cpu"
            self._scorer = LossScorer(self.suite.vgg, device)
        if self._scorer_size != size:
            self._scorer.set_targets(self.images.content_at(size), self.images.style_at(size))
            self._scorer_size = size
        return self._scorer

    def style_code(self, model_id: str) -> dict[str, np.ndarray]:
        """The style image's code (batch 1), by ONNX Runtime CPU fp32: the cached input."""
        if model_id not in self.codes and not self.bundle(model_id).has_style_input:
            self.codes[model_id] = {}  # a wrapped model: the style is in its weights
        if model_id not in self.codes:
            with create_backend("ort-cpu") as enc:
                bundle = self.bundle(model_id)
                enc.load(bundle, "style_encoder")
                rgb = im.pad_to_multiple(self.images.style_code_input)
                self.codes[model_id] = enc.run({"style": im.to_nchw(rgb)})
        return self.codes[model_id]

    def feeds(self, case: BenchCase, backend) -> dict[str, np.ndarray]:
        content = np.repeat(im.to_nchw(self.images.content_at(case.size)), case.batch, axis=0)
        values = {
            "content": content,
            "style": np.repeat(im.to_nchw(self.images.style_at(case.size)), case.batch, axis=0),
            "strength": np.ones(case.batch, dtype=np.float32),
        }
        if case.style == "cached":
            for name, arr in self.style_code(case.model).items():
                values[name] = np.repeat(arr, case.batch, axis=0)
        return {name: values[spec.value_key] for name, spec in backend.inputs().items()}

    # -- one case --------------------------------------------------------------
    def run_case(self, case: BenchCase, block: RunBlock) -> list[dict]:
        base = {**asdict(case), "method": None, "view": "compute", "budget": None}
        reason = self.status.get(case.backend)
        if reason:
            return [base | {"status": "skipped", "reason": reason}]
        try:
            bundle = self.bundle(case.model)
            base["method"] = bundle.family
            if case.style == "uncached" and "fused" not in bundle.graphs:
                reason = "this model has its style built in (no style encoder)"
                return [base | {"status": "skipped", "reason": reason}]
            if block.tiles:
                return self._tiled(case, block, bundle, base)
            return self._measure(case, block, bundle, base)
        except BackendUnavailable as exc:
            return [base | {"status": "skipped", "reason": str(exc)}]
        except (StyleshipError, RuntimeError, MemoryError, ValueError) as exc:
            first = (
                str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            )
            return [base | {"status": "failed", "reason": first}]
        finally:
            gc.collect()

    def _measure(self, case: BenchCase, block: RunBlock, bundle: Bundle, base: dict) -> list[dict]:
        graph = "stylizer" if case.style == "cached" else "fused"
        device = _device(case.backend, self.suite)
        torch_cuda = case.backend.startswith("torch") and device.startswith("cuda")
        if torch_cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        if case.backend == "tensorrt":
            self._engines(case, block, bundle)
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            backend = create_backend(case.backend)
            backend.load(bundle, graph, device, case.precision)
            load_ms = (time.perf_counter() - t0) * 1000
            try:
                feeds = self.feeds(case, backend)
                t0 = time.perf_counter()
                fn = backend.compute_fn(feeds)  # runs once: the first call
                first_ms = (time.perf_counter() - t0) * 1000
                stats = measure(fn, self.suite.timing)
                out = None
                if block.quality:
                    image_name = bundle.graph(graph).image_output
                    out = backend.run(feeds)[image_name][0].transpose(1, 2, 0)
                info = backend.info()
            finally:
                backend.close()
        row = base | {
            "status": "ok",
            "reason": None,
            **stats.to_dict(),
            "images_per_s": stats.images_per_s(case.batch),
            "load_ms": load_ms,
            "first_call_ms": first_ms,
            "peak_rss_mib": mem.peak_mib,
            "peak_device_mib": None,
            "engine": info.engine_version,
            "device": info.device,
            "details": info.details,
        }
        if torch_cuda:
            import torch

            row["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
        if out is not None:
            row |= self._quality(case, np.ascontiguousarray(out))
        rows = [row]
        if block.end_to_end and case.batch == 1 and case.style == "cached":
            rows.append(self._end_to_end(case, bundle, device, base))
        return rows

    def _engines(self, case: BenchCase, block: RunBlock, bundle: Bundle) -> None:
        """Build (or find up to date) the engines this block needs; build time stays out of
        the measurements and is recorded in the bundle's build.json."""
        from styleship.export.tensorrt import build_engines

        graph = "stylizer" if case.style == "cached" else "fused"
        build_engines(
            bundle.path,
            case.precision,
            sizes=block.sizes,
            max_batch=max(block.batches),
            graphs=tuple(g for g in ("style_encoder", graph) if g in bundle.graphs),
            log=self.log,
        )

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
        q = quality(out, self.images.content_at(case.size), self.scorer(case.size), ref)
        return q | {"psnr_reference": ref_name}

    def _end_to_end(self, case: BenchCase, bundle: Bundle, device: str, base: dict) -> dict:
        """File bytes in, encoded JPEG bytes out, through the production Stylizer."""
        from styleship.runtime.stylizer import Stylizer

        content = self.images.content_jpeg(case.size)
        style = im.encode(im.Image(self.images.style), ".png")
        with Stylizer(
            bundle, case.backend, device, case.precision, STYLE_SIZE, cache_dir=None
        ) as st:

            def call() -> bytes:
                return im.encode(st.stylize(content, style), ".jpg")

            call()  # style code now cached in memory: the cached view
            with PeakMemory() as mem:
                stats = measure(call, self.suite.timing)
        return base | {
            "view": "end-to-end",
            "status": "ok",
            "reason": None,
            **stats.to_dict(),
            "images_per_s": stats.images_per_s(1),
            "peak_rss_mib": mem.peak_mib,
        }

    def _tiled(self, case: BenchCase, block: RunBlock, bundle: Bundle, base: dict) -> list[dict]:
        """End to end on a size² photo, in tiles (overlap tiling.DEFAULT_OVERLAP) and untiled
        (tile 0); each tiled output is compared with the untiled one when the block has it."""
        from styleship.runtime import tiling
        from styleship.runtime.stylizer import Stylizer

        content = im.Image(self.images.content_at(case.size))
        style = im.encode(im.Image(self.images.style), ".png")
        device = _device(case.backend, self.suite)
        rows: list[dict] = []
        images: dict[int, np.ndarray] = {}
        with Stylizer(
            bundle, case.backend, device, case.precision, STYLE_SIZE, cache_dir=None
        ) as st:
            st.style_code(style)
            # Untiled last: engine arenas keep their high-water mark, and peak RSS is read
            # per row, so the big untiled run must not come before the tiled ones.
            for tile in sorted(block.tiles, key=lambda t: (t == 0, t)):
                self.log(f"{case.model} {case.backend} {case.size}² tile {tile or 'none'}")
                outputs = []

                def call(tile: int = tile, outputs: list = outputs) -> None:
                    out = st.stylize(content, style, tile=tile or None)
                    if not outputs:
                        outputs.append(out.rgb)

                with PeakMemory() as mem:
                    stats = measure(call, self.suite.timing)
                row = base | {
                    "view": "tiled" if tile else "untiled",
                    "status": "ok",
                    "reason": None,
                    "tile": tile or None,
                    "overlap": tiling.DEFAULT_OVERLAP if tile else None,
                    **stats.to_dict(),
                    "images_per_s": stats.images_per_s(1),
                    "peak_rss_mib": mem.peak_mib,
                }
                rows.append(row)
                images[tile] = outputs[0]
        reference = images.get(0)
        for row in rows:
            if row["tile"] and reference is not None:
                err = np.abs(images[row["tile"]] - reference)
                mse = float(np.mean(err**2))
                row |= {
                    "tile_mean_abs": float(err.mean()),
                    "tile_max_abs": float(err.max()),
                    "psnr_vs_untiled_db": 10 * np.log10(1 / mse) if mse else None,
                }
        return rows

    # -- the baseline ----------------------------------------------------------
    def run_gatys(self, size: int) -> list[dict]:
        from styleship.models.gatys import Gatys, GatysConfig

        g = self.suite.gatys
        cap = g.max_budget.get(size)
        budgets = sorted(g.budgets)
        kept = [b for b in budgets if cap is None or b <= cap]
        device = "cuda:0" if self.suite.device == "cuda" else "cpu"
        precision = "tf32" if g.tf32 and device != "cpu" else "fp32"
        base = {
            "model": "gatys",
            "method": "gatys",
            "backend": "torch",
            "precision": precision,
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
        lr = 1.0 if g.optimizer == "lbfgs" else 0.02
        config = GatysConfig(optimizer=g.optimizer, lr=lr, seed=self.suite.seed)
        baseline = Gatys(config, self.suite.vgg, device, g.tf32)
        content, style = self.images.content_at(size), self.images.style_at(size)
        with PeakMemory() as mem:
            result = baseline.run(content, style, kept[-1], kept, snapshots=True)
        for mark in result.checkpoints:
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
                    "images_per_s": 1000 / ms,
                    "load_ms": result.setup_seconds * 1000,
                    "peak_rss_mib": mem.peak_mib,
                    "content_loss": mark["content_loss"],
                    "style_loss": mark["style_loss"],
                    "ssim_content": quality(result.snapshots[mark["calls"]], content, None, None)[
                        "ssim_content"
                    ],
                    "details": {"optimizer": g.optimizer, "tf32": g.tf32},
                }
            )
        return sorted(rows, key=lambda r: r["budget"])
