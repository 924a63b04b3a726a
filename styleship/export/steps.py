"""The steps every bundle goes through after its graphs are staged, declared once.

`export` (torch), `import magenta`, `import multistyle26` and `wrap` differ
only in how they make the fp32 graphs and what they compare them with. What
follows is the same table for all of them, in the manner of ultralytics'
`export_formats()` and Polygraphy's loaders: one row per step, what asks for
it, and the function that does it. A source fills in a `Plan`;
`run_steps` walks STEPS in order and skips the rows the plan does not ask
for. Adding a step is one row here, not one more hand-written sequence per
source.

Every step works on the staged bundle through its `BundleWriter` and adds
what it made (graphs, precision twins, files) and its record (manifest key =
step name); the writer alone writes the manifest. Torch-free: the torch
parity check comes in as the plan's `parity` function.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from styleship.bundle.reader import Bundle
from styleship.bundle.writer import BundleWriter

Log = Callable[[str], None]
PRECISION_SIZE = 256  # reduced precisions are compared with fp32 at this side


@dataclass
class Plan:
    """What one source asks of the steps.

    `parity` compares the staged fp32 graphs with the source (PyTorch, the
    original ONNX files, or a probe run) and returns its record, raising the
    source's error when they disagree: export fails rather than ship a wrong
    bundle. `contents` and `styles` are the sample images int8 calibrates on
    and reduced precisions are measured on.
    """

    parity: Callable[[Bundle, Log], dict]
    contents: Sequence[Path] = ()
    styles: Sequence[Path] = ()
    fp16: bool = False
    int8: bool = False
    int8_min_psnr: float = 30.0
    precision_parity: bool = True
    style_bank: Path | None = None
    split: bool = True
    memory: bool = True
    seconds: dict[str, float] = field(default_factory=dict)  # per step, filled in as they run


def _norms(writer: BundleWriter, plan: Plan, log: Log) -> None:
    from styleship.export.norms import fuse_bundle_norms

    writer.record("norms", {"fused": fuse_bundle_norms(writer, log)})


def _upsampling(writer: BundleWriter, plan: Plan, log: Log) -> None:
    from styleship.export.upsample import subpixel_bundle

    writer.record("upsampling", subpixel_bundle(writer, plan.contents, plan.styles, log))


def _parity(writer: BundleWriter, plan: Plan, log: Log) -> None:
    writer.record("parity", plan.parity(writer.bundle(), log))


def _fp16(writer: BundleWriter, plan: Plan, log: Log) -> None:
    from styleship.export.precision import add_fp16

    add_fp16(writer, log)


def _int8(writer: BundleWriter, plan: Plan, log: Log) -> None:
    from styleship.export.int8 import add_int8_for_images

    add_int8_for_images(writer, plan.contents, plan.styles, log, plan.int8_min_psnr)


def _quantized_pads(writer: BundleWriter, plan: Plan, log: Log) -> None:
    from styleship.export.quantized_pads import quantize_bundle_pads

    writer.record("quantized_pads", quantize_bundle_pads(writer, plan.contents, plan.styles, log))


def _precision_parity(writer: BundleWriter, plan: Plan, log: Log) -> None:
    from styleship.export.precision import reduced_precision_parity
    from styleship.export.samples import parity_feed

    samples = {PRECISION_SIZE: parity_feed(plan.contents, plan.styles, PRECISION_SIZE)}
    writer.record("precision_parity", reduced_precision_parity(writer.bundle(), samples, log))


def _style_bank(writer: BundleWriter, plan: Plan, log: Log) -> None:
    from styleship.export.style_bank import add_style_bank

    add_style_bank(writer, Path(plan.style_bank), log)


def _split(writer: BundleWriter, plan: Plan, log: Log) -> None:
    from styleship.export.split import add_split

    add_split(writer, log)


def _narrow_norms(writer: BundleWriter, plan: Plan, log: Log) -> None:
    from styleship.export.narrow_norms import flatten_bundle_norms

    writer.record("narrow_norms", flatten_bundle_norms(writer, plan.contents, plan.styles, log))


def _memory(writer: BundleWriter, plan: Plan, log: Log) -> None:
    from styleship.export.split import add_memory

    add_memory(writer, log)


@dataclass(frozen=True)
class Step:
    """One row of STEPS: its name (and manifest key), whether a plan wants it, what runs."""

    name: str
    wanted: Callable[[Plan], bool]
    run: Callable[[BundleWriter, Plan, Log], None]
    doc: str


STEPS: tuple[Step, ...] = (
    Step(
        "norms",
        lambda p: True,
        _norms,
        "written-out instance norms fused into one node each (export/norms.py)",
    ),
    Step(
        "upsampling",
        lambda p: True,
        _upsampling,
        "x2 upsampling convs made sub-pixel, resizes by 1 dropped (export/upsample.py)",
    ),
    Step("parity", lambda p: True, _parity, "fp32 graphs vs the source; a gate"),
    Step("fp16", lambda p: p.fp16, _fp16, "fp16 twins with fp32 islands (export/fp16.py)"),
    Step("int8", lambda p: p.int8, _int8, "QDQ int8 twins, calibrated (export/int8.py)"),
    Step(
        "quantized_pads",
        lambda p: p.int8,
        _quantized_pads,
        "int8 maps quantised before they are padded (export/quantized_pads.py)",
    ),
    Step(
        "precision_parity",
        lambda p: p.precision_parity,
        _precision_parity,
        "bf16/fp16/int8 vs fp32, recorded, never a gate (export/precision.py)",
    ),
    Step(
        "style_bank",
        lambda p: p.style_bank is not None,
        _style_bank,
        "named style codes (export/style_bank.py)",
    ),
    Step("split", lambda p: p.split, _split, "exact-tiling graphs (export/split.py)"),
    Step(
        "narrow_norms",
        lambda p: True,
        _narrow_norms,
        "norms under 16 channels on an (N, C, H*W) view; after split (export/narrow_norms.py)",
    ),
    Step("memory", lambda p: p.memory, _memory, "bytes per pixel for tile='auto'"),
)


def run_steps(writer: BundleWriter, plan: Plan, log: Log = lambda msg: None) -> None:
    """Run the steps `plan` asks for, in STEPS order, timing each into `plan.seconds`."""
    for step in STEPS:
        if step.wanted(plan):
            start = time.perf_counter()
            step.run(writer, plan, log)
            plan.seconds[step.name] = round(time.perf_counter() - start, 2)
