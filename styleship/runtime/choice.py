"""Which engine and precision a bundle runs on when the user names none: measured, not assumed.

The fastest path differs from machine to machine: on one 2-core CPU the
benchmark's best Magenta path was OpenVINO int8, on another (with AMX) the
int8 graph is slower than bf16 would be. So the choice is made here, once per
machine, bundle and engine version: every (backend, precision) pair that this
machine can run and that the bundle's own quality records clear (fp32 always;
bf16, int8 and fp16 only where export measured them within their bar) is
timed on the stylizer graph at 512², batch 1, and the fastest wins. The
result, with every timing and every reason a pair was left out, is cached as
JSON under the user cache dir, so later processes pay nothing.

The same measurement says whether batching helps the winner (OpenVINO runs
batches on its slower dynamic-shape model, so there it does not); the server
batches only where it does.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from styleship._hashing import sha256_json
from styleship.errors import BackendUnavailable, InputError, ModelError, StyleshipError, first_line
from styleship.runtime.bundle import Bundle

CHOICE_VERSION = 1
PROBE_SIDE = 512
PROBE_BATCH = 4
WARM_UP = 3  # runs before timing: what a recurring shape gets (OpenVINO compiles it on the 3rd)
# Engines the automatic choice considers, each with the precisions it can run. ort-trt and
# tensorrt-graph are left to an explicit --backend: the first builds TensorRT engines for
# minutes on first use, the second is the same engines as `tensorrt`.
AUTO = {
    "tensorrt": ("fp16", "fp32"),
    "ort-cuda": ("fp16", "fp32"),
    "openvino": ("int8-bf16", "int8", "bf16", "fp32"),
    "ort-cpu": ("int8", "fp32"),
}
# The bars export holds reduced precisions to (export/precision.py, export/int8.py).
BAR_DB = {"bf16": 40.0, "fp16": 40.0, "int8": 30.0, "int8-bf16": 30.0}
# Batching must save this much time per image to be worth a queue delay.
BATCH_GAIN = 1.15
# Recorded with each batching verdict; a cached verdict of another method is measured again.
BATCHING_METHOD = "fastest run of each size, in turn; a gain measured twice"
ENGINE_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Candidate:
    """A pair the bundle's records clear, and why its output is good enough."""

    backend: str
    precision: str
    quality: str

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


@dataclass
class Choice:
    """What a Stylizer runs on, and why: the timings behind it or the flags that forced it."""

    backend: str
    precision: str
    reason: str
    quality: str = ""
    measured: list[dict] = field(default_factory=list)  # fastest first
    skipped: dict[str, str] = field(default_factory=dict)  # "backend precision" -> why
    batching: dict = field(default_factory=dict)
    source: str = "measured now"  # or "cached", "given"
    key: str = ""

    @property
    def batch_helps(self) -> bool:
        """True where running requests together is faster per image than one at a time."""
        return bool(self.batching.get("helps", False))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Choice:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})

    def brief(self) -> dict:
        """What commands report of a choice: the pair, why, its quality, where it came from."""
        return {
            k: getattr(self, k) for k in ("backend", "precision", "reason", "quality", "source")
        }


def _psnr(record: dict) -> float | None:
    values = [r["psnr_db"] for r in record.get("results", []) if "psnr_db" in r]
    if "psnr_db_min" in record:
        values.append(record["psnr_db_min"])
    return min(values) if values else None


def clearance(bundle: Bundle, backend: str, precision: str) -> tuple[bool, str]:
    """(cleared, why): fp32 is the reference; a reduced precision needs a passed export
    record for it (on this engine where the engine's arithmetic is what was measured)."""
    if precision == "fp32":
        return True, "the fp32 reference"
    files = bundle.graph("stylizer").files
    needs = {"bf16": "fp32", "int8-bf16": "int8"}.get(precision, precision)
    if needs not in files:
        return False, f"the bundle has no {precision} graph"
    bar = BAR_DB[precision]
    if precision == "int8" and backend == "ort-cpu":
        record = bundle.manifest.get("int8", {}).get("vs_fp32", {})
        where = "ONNX Runtime"
    else:
        record = bundle.manifest.get("precision_parity", {}).get(precision, {})
        where = record.get("backend", "?")
        # bf16 and int8 round differently per engine: only OpenVINO's own record counts.
        if backend == "openvino" and where != "openvino":
            return False, f"no OpenVINO {precision} record in the bundle"
    if not record:
        return False, f"the bundle records no {precision} quality check"
    psnr = _psnr(record)
    shown = f"{psnr:.1f} dB" if psnr is not None else "no PSNR"
    if not record.get("passed"):
        return False, f"{shown} on {where} at export, under the {bar:g} dB bar"
    return True, f"{shown} from fp32 on {where} at export (bar {bar:g} dB)"


def candidates(
    bundle: Bundle, backends: tuple[str, ...] | None = None, precision: str | None = None
) -> tuple[list[Candidate], dict[str, str]]:
    """The pairs worth timing here, fastest-first guess order, and why the others are not."""
    from styleship.runtime.backends import available_backends

    status = available_backends()
    names = backends or tuple(AUTO)
    found, skipped = [], {}
    for name in names:
        precisions = AUTO.get(name, ("fp32", "fp16", "bf16", "int8", "tf32"))
        if precision is not None:
            precisions = (precision,)
        if status.get(name) is not None:
            skipped[name] = status[name]
            continue
        if name == "tensorrt" and not (bundle.path / "engines").is_dir():
            skipped[name] = f"no engines built (styleship build {bundle.path})"
            continue
        for p in precisions:
            ok, why = clearance(bundle, name, p)
            if ok:
                found.append(Candidate(name, p, why))
            else:
                skipped[f"{name} {p}"] = why
    return found, skipped


def _versions() -> dict[str, str | None]:
    out = {}
    for pkg in ENGINE_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the timings depend on besides the bundle: CPU, cores, GPUs' driver env."""
    from styleship.runtime.backends.ort import cpu_threads

    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores": cpu_threads(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "engines": _versions(),
    }


def cache_key(bundle: Bundle, scope: dict) -> str:
    """Bundle (its files and its manifest, whose quality records clear the candidates) x
    machine x engine versions x what was asked (backend/precision)."""
    blob = json.dumps(
        {
            "v": CHOICE_VERSION,
            "bundle": bundle.hash,
            "manifest": sha256_json(bundle.manifest),
            "machine": machine(),
            "scope": scope,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_dir() -> Path:
    from styleship.runtime.style_cache import default_cache_dir

    return default_cache_dir().parent / "choices"


def probe_feed(engine, side: int, batch: int = 1, fixed: tuple[int, int] | None = None) -> dict:
    """Inputs for timing or measuring a loaded stylizer engine: a seeded random side² content
    (or the graph's fixed size), α 1, and every code tensor filled with 0.1."""
    h, w = fixed or (side, side)
    rng = np.random.default_rng(0)
    feed = {}
    for name, spec in engine.inputs().items():
        if spec.kind == "content":
            feed[name] = rng.random((batch, 3, h, w), dtype=np.float32)
        elif spec.kind == "strength":
            feed[name] = np.ones(batch, np.float32)
        else:
            shape = [batch] + [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
            feed[name] = np.full(shape, 0.1, np.dtype(spec.dtype))
    return feed


def time_pair(
    bundle: Bundle, backend: str, precision: str, side: int = PROBE_SIDE, batch: int = 1
) -> float:
    """Median ms per image of the stylizer graph at side², after the warm-up that lets
    each engine settle (OpenVINO compiles a shape-specific model on a shape's third call)."""
    return per_image_ms(bundle, backend, precision, side, (batch,))[batch]


def per_image_ms(
    bundle: Bundle,
    backend: str,
    precision: str,
    side: int,
    batches: tuple[int, ...],
    stat: Callable[[list[float]], float] = np.median,
) -> dict[int, float]:
    """ms per image at each batch size (`stat` of the samples), on one engine, the sizes
    run in turn so that a machine that slows down or speeds up meanwhile moves them all
    alike."""
    from styleship.runtime.backends import create_backend, default_device

    with create_backend(backend) as engine:
        engine.load(bundle, "stylizer", default_device(backend), precision)
        feeds = {b: probe_feed(engine, side, b, bundle.fixed_size) for b in batches}
        for _ in range(WARM_UP):
            for feed in feeds.values():
                engine.run(feed)
        samples: dict[int, list[float]] = {b: [] for b in batches}
        deadline = time.perf_counter() + 2.0 * len(batches)
        while (n := len(samples[batches[0]])) < 3 or (n < 5 and time.perf_counter() < deadline):
            for b, feed in feeds.items():
                t0 = time.perf_counter()
                engine.run(feed)
                samples[b].append((time.perf_counter() - t0) * 1e3 / b)
    return {b: float(stat(v)) for b, v in samples.items()}


def _measure(bundle: Bundle, found: list[Candidate], log: Log | None) -> tuple[list, dict]:
    measured, failed = [], {}
    for cand in found:
        if log:
            log(f"timing {cand.label} on {bundle.name} at {PROBE_SIDE}² (once per machine)")
        try:
            ms = time_pair(bundle, cand.backend, cand.precision)
        except (BackendUnavailable, ModelError, InputError) as exc:
            failed[cand.label] = first_line(exc, 200)
            continue
        measured.append({**asdict(cand), "p50_ms": round(ms, 2)})
    measured.sort(key=lambda m: m["p50_ms"])
    return measured, failed


def _batching(bundle: Bundle, backend: str, precision: str) -> dict:
    """Per-image time at batch 4 against batch 1, timed in turn on one engine (two
    separate measurements minutes apart once made batch 4 look 1.22x faster when it was
    1.19x slower: the batch-1 time came from a slow moment). Each size's fastest run is
    compared: interference only slows a run. A slow spell can outlast one measurement,
    and it slows batch 1 more (OpenVINO int8, Magenta at 512²: batch 1 at 36-46 ms for a
    whole measurement where it runs in 31, batch 4 at 35-40), so a gain is measured
    again and each size keeps its fastest run of the two before batching is turned on."""
    try:
        ms = per_image_ms(bundle, backend, precision, PROBE_SIDE, (1, PROBE_BATCH), min)
        if ms[1] / ms[PROBE_BATCH] >= BATCH_GAIN:
            again = per_image_ms(bundle, backend, precision, PROBE_SIDE, (1, PROBE_BATCH), min)
            ms = {b: min(ms[b], again[b]) for b in ms}
    except StyleshipError as exc:
        why = f"batch {PROBE_BATCH} failed: {first_line(exc, 120)}"
        return {"method": BATCHING_METHOD, "helps": False, "why": why}
    gain = ms[1] / ms[PROBE_BATCH]
    return {
        "method": BATCHING_METHOD,
        "helps": gain >= BATCH_GAIN,
        "batch": PROBE_BATCH,
        "per_image_ms": round(ms[PROBE_BATCH], 2),
        "batch1_ms": round(ms[1], 2),
        "gain": round(gain, 2),
    }


def _read(path: Path) -> Choice | None:
    try:
        return Choice.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write(path: Path, choice: Choice) -> None:
    from styleship import _atomic

    # An unwritable cache only costs a re-measurement next time.
    with contextlib.suppress(OSError, StyleshipError):
        _atomic.write_text(path, json.dumps(choice.to_dict(), indent=2) + "\n")


def choose(
    bundle: Bundle,
    backend: str | None = None,
    precision: str | None = None,
    log: Log | None = None,
) -> Choice:
    """The fastest cleared pair here, within what the caller fixed (a backend, a precision).

    Both fixed: no measurement. A cached choice is reused.
    """
    if backend and precision:
        return Choice(backend, precision, "given (--backend and --precision)", source="given")
    scope = {"backend": backend, "precision": precision}
    key = cache_key(bundle, scope)
    path = cache_dir() / f"{key}.json"
    cached = _read(path)
    if cached is not None:
        cached.source = "cached"
        return cached
    found, skipped = candidates(bundle, (backend,) if backend else None, precision)
    if not found:
        asked = " ".join(x for x in (backend, precision) if x) or "any backend"
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise BackendUnavailable(f"nothing can run {bundle.name} with {asked} here ({reasons})")
    if len(found) == 1:
        only = found[0]
        choice = Choice(
            only.backend,
            only.precision,
            "the only pair this machine and bundle allow",
            quality=only.quality,
            skipped=skipped,
            key=key,
        )
        _write(path, choice)
        return choice
    measured, failed = _measure(bundle, found, log)
    skipped |= failed
    if not measured:
        reasons = "; ".join(f"{k}: {v}" for k, v in failed.items())
        raise BackendUnavailable(f"no engine could run {bundle.name} here ({reasons})")
    best = measured[0]
    runner_up = measured[1] if len(measured) > 1 else None
    reason = f"fastest of {len(measured)} measured here: {best['p50_ms']:g} ms at {PROBE_SIDE}²"
    if runner_up:
        reason += (
            f" (next: {runner_up['backend']} {runner_up['precision']} {runner_up['p50_ms']:g} ms)"
        )
    choice = Choice(
        best["backend"],
        best["precision"],
        reason,
        quality=best["quality"],
        measured=measured,
        skipped=skipped,
        key=key,
    )
    _write(path, choice)
    return choice


def batching(bundle: Bundle, choice: Choice) -> dict:
    """Whether batches help the chosen pair (measured once, then kept with the choice):
    the server asks, `stylize` never needs to."""
    if choice.batching.get("method") != BATCHING_METHOD:  # none yet, or an older method's
        choice.batching = _batching(bundle, choice.backend, choice.precision)
        if choice.key:
            _write(cache_dir() / f"{choice.key}.json", choice)
    return choice.batching


def cached_choices() -> list[dict]:
    """Every cached choice on this machine (for `doctor`)."""
    folder = cache_dir()
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        choice = _read(path)
        if choice is not None:
            out.append(choice.to_dict())
    return out
