"""Add the statistics-exact tiling graphs to a bundle (docs/tiling.md, docs/bundle.md).

`add_split` cuts the bundle's fp32 `stylizer` graph at its whole-image
statistics (export/split_graph.py), writes one graph per level and the final
`split_stylize` graph, and records in the manifest's `split` entry what the
runtime needs without knowing the family: the graphs, each statistic (kind,
level, the feature it reduces and that feature's scale), the halo a tile needs
(measured: how far a change in the input reaches through every graph, with the
statistics held fixed) and a check of tiled against untiled on a sample photo.
Only a split that passes the check is marked `exact`; the runtime falls back to
blended tiles otherwise. Torch-free, so import and export both call it, and
`python -m styleship.export.split BUNDLE` upgrades an existing bundle in place
(through the bundle writer, so its weights stay shared).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from styleship.bundle.writer import BundleWriter, rewrite
from styleship.compare import psnr
from styleship.errors import StyleshipError
from styleship.export.samples import default_parity_images
from styleship.runtime import exact_tiling as et
from styleship.runtime import image as im
from styleship.runtime.bundle import Bundle, TensorSpec

VERSION = 1
# Tiled vs untiled on a sample photo must agree as export parity asks of an image: 50 dB.
# (Not a max-abs bound: a VQ code index may flip at a near-tie on float noise.)
EXACT_MIN_PSNR = 50.0
CHECK_SIZE, CHECK_TILE = (336, 264), 96
PROBE_SIDES = (256, 512, 1024)
Log = Callable[[str], None]


def _probe_shapes(model, names: list[str], feed: dict) -> dict[str, tuple]:
    """Shapes of intermediate tensors of `model` on `feed` (ONNX Runtime CPU)."""
    import copy

    import onnxruntime as ort
    from onnx import TensorProto, helper

    m = copy.deepcopy(model)
    known = {o.name for o in m.graph.output}
    m.graph.output.extend(
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in known
    )
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}
    outs = sess.run(names, {k: v for k, v in feed.items() if k in wanted})
    return {n: o.shape for n, o in zip(names, outs)}


def _sample(height: int, width: int) -> np.ndarray:
    import cv2

    rgb = im.read_image(default_parity_images()[0][0]).rgb
    return np.ascontiguousarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))


def _values(bundle: Bundle) -> dict[str, np.ndarray]:
    """A real style code (a sample painting, or the first bank style) and α = 0.5, batch 1."""
    from styleship.runtime.stylizer import Stylizer

    with Stylizer(bundle, "ort-cpu", precision="fp32", cache_dir=None) as st:
        if bundle.has_style_input:
            code = st.style_code(default_parity_images()[1][0])
        elif bundle.style_bank.names:
            code = st.style_code(bundle.style_bank.names[0])
        else:
            code = {}
    return {**code, "strength": np.array([0.5], np.float32)}


class _Runner:
    """The split graphs of a bundle on ONNX Runtime CPU, opened once."""

    def __init__(self, bundle: Bundle, graphs) -> None:
        from styleship.runtime.backends import create_backend

        self.engines = {}
        for g in graphs:
            self.engines[g] = create_backend("ort-cpu")
            self.engines[g].load(bundle, g)

    def __call__(self, graph: str, values: dict) -> dict:
        e = self.engines[graph]
        return e.run({n: values[s.value_key] for n, s in e.inputs().items()})

    def close(self) -> None:
        for e in self.engines.values():
            e.close()


def _reach(plan: et.SplitPlan, run: _Runner, values: dict, image_output: str, side: int):
    """How far (image pixels) an 8×8 change at the centre reaches in any graph's output,
    with the statistics fixed; None when it reaches the border (the probe was too small)."""
    rgb = _sample(side, side)
    known = et.statistics(plan, run, rgb, values, side)
    bumped = rgb.copy()
    c0, c1 = side // 2 - 4, side // 2 + 4
    bumped[c0:c1, c0:c1] = 1.0 - bumped[c0:c1, c0:c1]
    scales = {s.feature: s.scale for s in plan.stats}
    reach = 0
    for graph in plan.graphs:
        a = run(graph, {**values, **known, "content": im.to_nchw(rgb)})
        b = run(graph, {**values, **known, "content": im.to_nchw(bumped)})
        for name, x in a.items():
            scale = scales.get(name, 1) if name != image_output else 1
            changed = np.abs(x - b[name]).max(axis=(0, 1)) > 0
            for axis in (0, 1):
                idx = np.flatnonzero(changed.any(axis=1 - axis))
                if idx.size == 0:
                    continue
                if idx[0] == 0 or idx[-1] == changed.shape[axis] - 1:
                    return None
                reach = max(reach, c0 - idx[0] * scale, (idx[-1] + 1) * scale - c1)
    return reach


def _check(plan: et.SplitPlan, run: _Runner, bundle: Bundle, values: dict) -> dict:
    """Exact tiling against the untiled stylizer on a sample photo."""
    from styleship.runtime.backends import create_backend

    h, w = CHECK_SIZE
    rgb = _sample(h, w)
    tiled = et.stylize(plan, run, rgb, values, CHECK_TILE, bundle.graph("stylizer").image_output)
    with create_backend("ort-cpu") as full:
        full.load(bundle, "stylizer")
        feed = {
            n: values[s.value_key] if s.kind != "content" else im.to_nchw(rgb)
            for n, s in full.inputs().items()
        }
        ref = im.from_nchw(full.run(feed)[bundle.graph("stylizer").image_output])
    return {
        "size": [h, w],
        "tile": CHECK_TILE,
        "tiles": len(et.interiors(h, w, CHECK_TILE, plan.multiple)),
        "max_abs": float(np.abs(tiled - ref).max()),
        "psnr_db": psnr(ref, tiled),
        "min_psnr_db": EXACT_MIN_PSNR,
    }


def add_split(writer: BundleWriter, log: Log = lambda msg: None) -> dict:
    """Write the split graphs into the staged bundle and record the manifest's `split` entry."""
    import onnx

    from styleship.export.split_graph import split

    stylizer = writer.manifest.graphs["stylizer"]
    if writer.manifest.normalisation.get("fixed_size"):
        entry = {"version": VERSION, "exact": False, "reason": "the graph takes one fixed size"}
        writer.record("split", entry)
        return entry
    log("splitting stylizer at its whole-image statistics")
    model = onnx.load(str(writer.stage / stylizer.files["fp32"]))
    cut = split(model)
    specs = {t.name: t for t in stylizer.inputs}
    values = _values(writer.bundle())
    feed = {n: values[t.value_key] for n, t in specs.items() if t.kind != "content"}
    feed["content"] = im.to_nchw(_sample(128, 96))
    stats, levels = [], []
    if cut is not None:
        names = [s.tensor for s in cut.stats] + list(cut.features)
        shapes = _probe_shapes(cut.source, names, feed)
        for lv, level_model in enumerate([*cut.levels, cut.stylize]):
            gname = f"split_stats_{lv}" if lv < len(cut.levels) else "split_stylize"
            ins = []
            for i in level_model.graph.input:
                if i.name in specs:
                    ins.append(specs[i.name])
                else:
                    shape = (
                        "batch",
                        *shapes[next(s.tensor for s in cut.stats if s.name == i.name)][1:],
                    )
                    ins.append(TensorSpec(i.name, shape, "statistic"))
            if gname == "split_stylize":
                outs = list(stylizer.outputs)
            else:
                outs = [
                    TensorSpec(
                        o.name,
                        (
                            "batch",
                            _channels(shapes, cut, o.name),
                            "feature_height",
                            "feature_width",
                        ),
                        "feature",
                    )
                    for o in level_model.graph.output
                ]
                levels.append(gname)
            writer.add_graph(gname, level_model, ins, outs)
        for s in cut.stats:
            scale = 128 // shapes[s.source][2]
            stats.append(
                {
                    "name": s.name,
                    "kind": s.kind,
                    "level": s.level,
                    "feature": cut.features[s.source],
                    "scale": int(scale),
                    "shape": ["batch", *shapes[s.tensor][1:]],
                }
            )
    multiple = max([im.MULTIPLE, *(s["scale"] for s in stats)])
    entry = {
        "version": VERSION,
        "source": "stylizer",
        "exact": False,
        "levels": levels,
        "stylize": "split_stylize" if cut is not None else "stylizer",
        "stats": stats,
        "halo": 0,
        "multiple": multiple,
    }
    writer.record("split", entry)
    bundle = writer.bundle()
    plan = et.SplitPlan(
        tuple(levels),
        entry["stylize"],
        tuple(
            et.StatSpec(
                s["name"], s["kind"], s["level"], s["feature"], s["scale"], tuple(s["shape"])
            )
            for s in stats
        ),
        0,
        multiple,
    )
    run = _Runner(bundle, plan.graphs)
    try:
        image_output = bundle.graph("stylizer").image_output
        reach = None
        for side in PROBE_SIDES:
            reach = _reach(plan, run, values, image_output, side)
            if reach is not None:
                break
        if reach is None:
            entry["reason"] = f"the receptive field exceeds {PROBE_SIDES[-1] // 2} pixels"
        else:
            halo = multiple * math.ceil((reach + multiple) / multiple)
            plan = et.SplitPlan(plan.levels, plan.stylize, plan.stats, halo, multiple)
            check = _check(plan, run, bundle, values)
            entry |= {"halo": halo, "receptive_reach": int(reach), "check": check}
            entry["exact"] = check["psnr_db"] >= EXACT_MIN_PSNR
            if not entry["exact"]:
                entry["reason"] = f"tiled is {check['psnr_db']:.1f} dB from untiled"
    finally:
        run.close()
    entry["passes"] = len(levels) + 1
    log(
        f"split: {len(stats)} statistics in {len(levels)} levels, halo {entry['halo']} px, "
        + ("exact" if entry["exact"] else f"not exact ({entry.get('reason')})")
    )
    return entry


def add_memory(writer: BundleWriter, log: Log = lambda msg: None) -> None:
    """Record the stylizer's measured bytes per pixel on ONNX Runtime CPU (`tile="auto"`)."""
    from styleship.runtime.memory import measure

    writer.flush()  # the measurement loads the staged bundle in a fresh process
    rec = measure(writer.stage, "ort-cpu", "fp32")
    if rec is not None:
        writer.record("memory", rec)
        log(f"memory: {rec['bytes_per_pixel']:.0f} bytes per pixel on ort-cpu")


def _channels(shapes: dict, cut, feature: str) -> int:
    source = next(src for src, f in cut.features.items() if f == feature)
    return int(shapes[source][1])


def upgrade(bundle_dir: str | Path, log: Log = print) -> dict:
    """Add (or redo) the split of an existing bundle, atomically replacing it."""
    with rewrite(bundle_dir) as writer:
        for name in [g for g in writer.manifest.graphs if g.startswith("split_")]:
            del writer.manifest.graphs[name]
            (writer.stage / f"{name}.onnx").unlink(missing_ok=True)
        writer.manifest.records.pop("split", None)
        entry = add_split(writer, log)
        add_memory(writer, log)
    return entry


if __name__ == "__main__":
    try:
        for arg in sys.argv[1:]:
            upgrade(arg)
    except StyleshipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
