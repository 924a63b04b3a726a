"""Where TensorRT engines live in a bundle, what they were built for, and when to refuse them.

An engine runs only on the TensorRT version that built it and on GPUs of the
same compute capability, and it is only as right as the ONNX it came from.
So engines sit in `engines/<sm-tag>-trt<version>/` beside a `build.json`
that records all three, and loading compares them before deserialising.
Torch-free: the runtime reads these; `export/tensorrt.py` writes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from styleship.errors import ModelError
from styleship.runtime.bundle import WEIGHTS, Bundle, GraphInfo

ENGINES = "engines"
BUILD_JSON = "build.json"
BUILD_FORMAT, BUILD_VERSION = "styleship-engines", 1
# Per input dim: (min, opt, max).
Profile = dict[str, dict[str, list[int]]]
# What `styleship build` optimises for unless told otherwise; ONNX Runtime's TensorRT
# provider is given the same profiles, so both engines cover the same inputs.
BUILD_SIZES = (256, 512, 1024)
BUILD_MAX_BATCH = 16


def engine_dir(bundle: Bundle, gpu_tag: str, trt_version: str) -> Path:
    return bundle.path / ENGINES / f"{gpu_tag}-trt{trt_version}"


def engine_name(graph: str, precision: str) -> str:
    return f"{graph}.{precision}.plan"


def rebuild_hint(bundle: Bundle, precision: str) -> str:
    return f"rebuild it: styleship build {bundle.path} --precision {precision}"


def profiles(
    graph: GraphInfo,
    sizes: list[int],
    max_batch: int,
    min_side: int,
    opt_batch: int | Sequence[int] = 1,
) -> list[Profile]:
    """One optimisation profile per requested size (and per opt batch, when several are
    given), nested: profile k takes any side from `min_side` up to sizes[k] and any batch
    up to `max_batch`, and is tuned at sizes[k]² and its opt batch (TensorRT tunes at `opt`).

    Nested rather than disjoint ranges, so a non-square image (say 256×1024)
    still fits one profile: the smallest whose maximum covers both sides.
    """
    opts = sorted({opt_batch} if isinstance(opt_batch, int) else set(opt_batch))
    if not sizes or any(s % 8 or s < min_side for s in sizes):
        raise ModelError(f"engine sizes must be multiples of 8 and at least {min_side}: {sizes}")
    if not opts or not all(1 <= b <= max_batch for b in opts):
        raise ModelError(f"need 1 <= opt batch ({opt_batch}) <= max batch ({max_batch})")
    low = -(-min_side // 8) * 8
    out = []
    for size in sorted(set(sizes)):
        for batch in opts:
            profile: Profile = {}
            for t in graph.inputs:
                mins, opt, maxs = [], [], []
                for dim in t.shape:
                    if isinstance(dim, int):
                        mins.append(dim), opt.append(dim), maxs.append(dim)
                    elif dim == "batch":
                        mins.append(1), opt.append(batch), maxs.append(max_batch)
                    else:  # a spatial axis
                        mins.append(low), opt.append(size), maxs.append(size)
                profile[t.name] = {"min": mins, "opt": opt, "max": maxs}
            out.append(profile)
    return out


def _admits(profile: Profile, shapes: dict[str, tuple[int, ...]]) -> bool:
    return all(
        all(lo <= n <= hi for lo, n, hi in zip(p["min"], shapes[name], p["max"]))
        for name, p in profile.items()
    )


def pick_profile(built: list[Profile], shapes: dict[str, tuple[int, ...]]) -> int:
    """The smallest profile that admits every input shape; among profiles of that size
    (same ranges, tuned at other batches), the one tuned nearest these shapes."""
    fits = [i for i, profile in enumerate(built) if _admits(profile, shapes)]
    if fits:
        ranges = {k: v["max"] for k, v in built[fits[0]].items()}
        same = [i for i in fits if {k: v["max"] for k, v in built[i].items()} == ranges]
        return min(
            same,
            key=lambda i: sum(
                abs(o - n) for name, p in built[i].items() for o, n in zip(p["opt"], shapes[name])
            ),
        )
    largest = built[-1] if built else {}
    raise ModelError(
        f"input shapes {shapes} fit none of the engine's profiles (largest: "
        f"{ {k: v['max'] for k, v in largest.items()} }); build with larger --shapes"
    )


def check_fits(built: list[Profile] | None, what: str, batch: int, side: int | None) -> None:
    """At start-up, refuse in one line an engine none of whose profiles takes `batch` images
    of side×side (`side` None: any side is left to each call). Without this, `serve` and
    `stylize` start and then fail every request the engine cannot take. `built` None: the
    engine has no profiles (ONNX Runtime, OpenVINO, torch take any shape)."""
    if built is None:
        return
    for profile in built:
        if all(
            d["min"][0] <= batch <= d["max"][0]
            and (
                side is None
                or len(d["max"]) != 4
                or all(d["min"][i] <= side <= d["max"][i] for i in (2, 3))
            )
            for d in profile.values()
        ):
            return
    most = max((d["max"][0] for p in built for d in p.values()), default=0)
    widest = max(
        (min(d["max"][2:]) for p in built for d in p.values() if len(d["max"]) == 4), default=0
    )
    asked = f"batch {batch}" + (f" at {side}×{side}" if side else "")
    raise ModelError(
        f"the {what} engine's profiles take batches up to {most} and sides up to {widest}, "
        f"not {asked}; rebuild it with `styleship build --shapes ... --max-batch ...` to "
        "cover that, or ask for less"
    )


def check_stylizer_engines(stylizer, max_batch: int, max_side: int | None) -> None:
    """`check_fits` for a Stylizer's engines: its style encoder at the padded style side
    (batch 1), its stylizer at `max_batch` and `max_side`."""
    multiple = stylizer.bundle.style_multiple
    side = -(-stylizer.style_size // multiple) * multiple
    fixed = getattr(stylizer.engine, "profiles", None) is not None  # engines with profiles
    if stylizer.bundle.has_style_input and (fixed or stylizer._encoder is not None):
        encoder = stylizer.open_encoder()  # opened now, not at the first style, to check it
        check_fits(getattr(encoder, "profiles", None), "style encoder", 1, side)
    multiple = stylizer.bundle.manifest.get("normalisation", {}).get("size_multiple", 8)
    padded = -(-max_side // multiple) * multiple if max_side else None  # as contents are
    check_fits(getattr(stylizer._stylizer, "profiles", None), "stylizer", max_batch, padded)


def read_build(directory: Path) -> dict:
    path = directory / BUILD_JSON
    if not path.is_file():
        raise ModelError(f"no engines for this GPU and TensorRT in {directory}")
    data = json.loads(path.read_text())
    if data.get("format") != BUILD_FORMAT or data.get("format_version", 99) > BUILD_VERSION:
        raise ModelError(f"{path}: not a styleship engine record (or from a newer styleship)")
    return data


def check_engine(
    bundle: Bundle, graph: str, precision: str, gpu_tag: str, trt_version: str
) -> tuple[Path, dict]:
    """The engine file for `graph` at `precision` on this GPU/TensorRT, after checking that
    it was built here-compatibly from the bundle's current ONNX; else ModelError saying how
    to rebuild."""
    hint = rebuild_hint(bundle, precision)
    root = bundle.path / ENGINES
    directory = engine_dir(bundle, gpu_tag, trt_version)
    if not directory.is_dir():
        found = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        detail = f" (found engines for {', '.join(found)})" if found else ""
        raise ModelError(
            f"{bundle.path}: no TensorRT engines for {gpu_tag} with TensorRT {trt_version}"
            f"{detail}; {hint}"
        )
    build = read_build(directory)
    entry = build.get("engines", {}).get(engine_name(graph, precision))
    if entry is None:
        raise ModelError(f"{directory}: no {precision} engine for graph {graph!r}; {hint}")
    if build.get("tensorrt") != trt_version or build.get("gpu", {}).get("tag") != gpu_tag:
        raise ModelError(
            f"{directory}: built with TensorRT {build.get('tensorrt')} for "
            f"{build.get('gpu', {}).get('tag')}, this is TensorRT {trt_version} on {gpu_tag}; "
            f"{hint}"
        )
    onnx_file = bundle.path / entry["onnx"]
    files = bundle.files
    if files.get(entry["onnx"]) != entry["onnx_sha256"]:
        raise ModelError(
            f"{directory}: the engine was built from a different {onnx_file.name} "
            f"(the bundle was re-exported); {hint}"
        )
    if files.get(WEIGHTS) != entry.get("weights_sha256"):
        raise ModelError(
            f"{directory}: the engine was built from different weights than the bundle's "
            f"{WEIGHTS} (re-exported or upgraded); {hint}"
        )
    path = directory / engine_name(graph, precision)
    if not path.is_file():
        raise ModelError(f"{path} is missing; {hint}")
    return path, entry
