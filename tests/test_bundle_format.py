"""The bundle format (docs/bundle.md): each weight stored once, version 1 still read,
`styleship upgrade` changes no tensor, a broken weights file is one error line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ASSETS, run_cli

from styleship.bundle import WEIGHTS, Bundle, Manifest
from styleship.bundle.weights import embedded, embedded_duplicates, embedded_sha256
from styleship.bundle.writer import hash_files
from styleship.errors import ModelError

SHIPPED = sorted((ASSETS / "models").glob("*.*"))
# The bar, in bytes of the graphs, their weights and the manifest (the checkpoint,
# which only the torch comparison backend reads, is counted apart below). The warm-started
# VQ-VAE carries Magenta's MobileNet-v2 style predictor: 2.2 M of its 2.4 M parameters.
LIMITS = {"stvae-demo.stvae": 8_000_000, "vqvae-demo.vqvae": 19_000_000}


def _graph_files(path: Path) -> list[str]:
    return Manifest.from_dict(json.loads((path / "manifest.json").read_text())).graph_files()


def _as_version_1(src: Path, dst: Path) -> Path:
    """A version-1 copy of `src`: every graph with its weights inside, no weights file."""
    shutil.copytree(src, dst)
    for name in _graph_files(dst):
        (dst / name).write_bytes(embedded(src / name).SerializeToString())
    (dst / WEIGHTS).unlink()
    m = json.loads((dst / "manifest.json").read_text())
    for key in ("external_data", "upgraded_from"):
        m.pop(key, None)
    m["format_version"] = 1
    m["files"] = hash_files(dst)
    (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    return dst


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_bundles_store_each_weight_once(path):
    bundle = Bundle.load(path)
    assert bundle.format_version == 2 and WEIGHTS in bundle.manifest["files"]
    assert embedded_duplicates(path, _graph_files(path)) == {}
    files = [*bundle.manifest["files"], "manifest.json"]
    graphs_and_weights = sum(
        (path / f).stat().st_size for f in files if not f.startswith("checkpoint.")
    )
    assert graphs_and_weights <= LIMITS[path.name]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_upgrade_changed_no_graph(path):
    """With its weights put back, every graph is byte for byte the version-1 file."""
    m = Bundle.load(path).manifest
    recorded = m["external_data"]["embedded_sha256"]
    assert recorded == {f: embedded_sha256(path / f) for f in _graph_files(path)}
    if "upgraded_from" in m:  # written by `styleship upgrade` from a version-1 bundle
        assert recorded == m["upgraded_from"]["graph_sha256"]


def _feed(bundle: Bundle, graph: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {"content": (1, 3, 64, 48), "style": (1, 3, 64, 64), "strength": (1,)}
    return {
        t.name: rng.random(shapes[t.kind], dtype=np.float32) for t in bundle.graph(graph).inputs
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_packed_outputs_are_identical_on_ort_and_openvino(path, tmp_path):
    """The packed graphs, read from their paths, against their version-1 selves."""
    import onnxruntime as ort

    old = _as_version_1(path, tmp_path / path.name)
    bundle = Bundle.load(path)
    feed = _feed(bundle, "fused")
    for precision, name in bundle.graph("fused").files.items():
        sessions = [
            ort.InferenceSession(str(p / name), providers=["CPUExecutionProvider"])
            for p in (path, old)
        ]
        new, ref = (s.run(None, feed)[0] for s in sessions)
        assert np.array_equal(new, ref), precision
    ov = pytest.importorskip("openvino")
    core = ov.Core()
    outs = []
    for p in (path, old):
        compiled = core.compile_model(core.read_model(str(p / "fused.onnx")), "CPU")
        outs.append(compiled(feed)[0])
    assert np.array_equal(outs[0], outs[1])


def test_version_1_loads_and_upgrades_with_identical_outputs(tmp_path, contents, styles):
    from styleship.runtime.stylizer import Stylizer

    old = _as_version_1(SHIPPED[0], tmp_path / "v1" / SHIPPED[0].name)
    bundle = Bundle.load(old)
    assert bundle.format_version == 1 and len(embedded_duplicates(old, _graph_files(old))) > 0

    def stylize(path: Path) -> np.ndarray:
        with Stylizer(Bundle.load(path), "ort-cpu", cache_dir=None) as st:
            return st.stylize(contents[0], styles[0], max_size=128, tile=None).rgb

    before = stylize(old)
    proc = run_cli("upgrade", old, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["from_version"], report["to_version"]) == (1, 2)
    assert report["bytes_after"] < report["bytes_before"] / 2
    assert Bundle.load(old).format_version == 2
    assert embedded_duplicates(old, _graph_files(old)) == {}
    assert np.array_equal(stylize(old), before)
    again = json.loads(run_cli("upgrade", old, "--json").stdout)
    assert again["from_version"] == again["to_version"] == 2


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f.unlink(), "weights.bin (the weights every graph reads) is missing"),
        (lambda f: f.write_bytes(f.read_bytes()[:-1]), "weights.bin (the weights every graph"),
    ],
    ids=["missing", "truncated"],
)
def test_broken_weights_file_is_one_error_line(tmp_path, contents, styles, damage, message):
    path = Path(shutil.copytree(SHIPPED[0], tmp_path / SHIPPED[0].name))
    damage(path / WEIGHTS)
    with pytest.raises(ModelError, match=r"re-export the bundle"):
        Bundle.load(path)
    proc = run_cli("stylize", contents[0], "-m", path, "-s", styles[0], "-o", tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert message in proc.stderr and proc.stderr.strip().startswith("error:")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_manifest_round_trips_through_its_type(path):
    raw = json.loads((path / "manifest.json").read_text())
    assert Manifest.from_dict(raw).to_dict() == raw


def test_a_fresh_export_is_version_2_with_each_weight_once(small_bundle):
    bundle = Bundle.load(small_bundle)
    assert bundle.format_version == 2
    assert embedded_duplicates(small_bundle, _graph_files(small_bundle)) == {}
    record = bundle.manifest["external_data"]
    # The split graphs and the fused graph reuse the stylizer's and style encoder's tensors.
    assert record["unique_tensors"] < record["tensors"]
    assert record["embedded_sha256"].keys() == set(_graph_files(small_bundle))


def _foreign(path: Path) -> Path:
    """Two 3×3 convolutions (weights of 1.7 KB each), NCHW in [0, 1]: someone else's model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.1, shape).astype(np.float32), name)
        for name, shape in (("w1", (16, 3, 3, 3)), ("w2", (3, 16, 3, 3)))
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["y"]),
    ]
    dims = ["n", 3, "h", "w"]
    graph = helper.make_graph(
        nodes,
        "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_steps_run_from_one_table_in_its_order(small_bundle, tmp_path):
    """export and wrap record exactly the steps their plans ask for, in STEPS order."""
    from styleship.export.steps import STEPS
    from styleship.export.wrap import Convention, wrap_model

    names = [s.name for s in STEPS]
    exported = [k for k in Bundle.load(small_bundle).manifest if k in names]
    assert exported == [
        "norms",
        "upsampling",
        "parity",
        "precision_parity",
        "split",
        "narrow_norms",
        "memory",
    ]
    # A foreign single-graph model: wrap runs the same table (no reduced precisions).
    wrapped = wrap_model(_foreign(tmp_path / "net.onnx"), tmp_path / "f.wrapped", Convention("0-1"))
    manifest = Bundle.load(wrapped).manifest
    steps = ["norms", "upsampling", "parity", "split", "narrow_norms", "memory"]
    assert [k for k in manifest if k in names] == steps
    assert manifest["parity"]["passed"] and manifest["external_data"]["unique_tensors"] == 2
