"""int8 export: QDQ graphs, the float islands, and the manifest's record against fp32."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import ROOT, run_cli

from styleship.export.fp16 import fp32_nodes
from styleship.export.int8 import encoder_modules
from styleship.runtime.bundle import Bundle
from styleship.runtime.stylizer import Stylizer

DEMO = ROOT / "assets" / "models" / "stvae-demo.stvae"


@pytest.fixture(scope="module")
def int8_bundle(small_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "small.stvae"
    # A bar no int8 graph reaches: the search tries none and all of the encoder in float,
    # then keeps the fastest graph and records that it missed.
    proc = run_cli(
        "export", small_checkpoint, "-o", out, "--precision", "int8", "--int8-min-psnr", "99"
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_export_writes_qdq_graphs_and_keeps_the_transform_float(int8_bundle):
    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    files = manifest["graphs"]["stylizer"]["files"]
    assert files["int8"] == "stylizer.int8.onnx"
    assert manifest["graphs"]["style_encoder"]["files"]["int8"] == "style_encoder.onnx"
    graph = onnx.load(str(int8_bundle / files["int8"])).graph
    quantised = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    fed_int8 = [
        c
        for c in convs
        if set(c.input[:2])
        <= {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    ]
    record = manifest["int8"]
    assert quantised and len(fed_int8) == record["graphs"]["stylizer"]["quantised"]
    # The convolutions left in float are exactly those the fp16 rules keep in fp32: the
    # transform's, and the one whose features feed the covariance statistics.
    source = onnx.load(str(int8_bundle / files["fp32"]))
    keep = set(fp32_nodes(source))
    expected = {n.name for n in source.graph.node if n.op_type == "Conv" and n.name in keep}
    float_convs = set(record["graphs"]["stylizer"]["float"])
    assert float_convs == expected
    assert any("transform" in str(c.metadata_props) for c in convs if c.name in float_convs)
    vs = record["vs_fp32"]
    assert vs["size"] == 512 and len(vs["pairs"]) == 4 and vs["speedup"] > 0
    assert vs["min_psnr_db"] == 99 and not vs["passed"]
    modules = encoder_modules(Bundle.load(int8_bundle))
    assert modules and all(".encoder." in m for m in modules)
    trials = record["search"]["trials"]
    assert [t["float_encoder_convs"] for t in trials] == [0, len(modules)]
    assert all(0 < t["psnr_db_min"] < 99 for t in trials)
    assert record["float_encoder_modules"] == []


def test_int8_runs_close_to_fp32(int8_bundle, contents, styles):
    outs = {}
    for precision in ("fp32", "int8"):
        with Stylizer(int8_bundle, "ort-cpu", precision=precision, cache_dir=None) as st:
            outs[precision] = st.stylize(contents[0], styles[0], max_size=256).rgb
    mse = float(np.mean((outs["fp32"] - outs["int8"]) ** 2))
    assert mse > 0 and 10 * np.log10(1 / mse) > 20  # quantised, and still the same picture


def test_int8_is_refused_where_it_does_not_exist(small_bundle, contents, styles):
    proc = run_cli(
        "stylize",
        contents[0],
        "-m",
        small_bundle,
        "-s",
        styles[0],
        "--precision",
        "int8",
        "--backend",
        "ort-cpu",
        "-o",
        small_bundle.parent,
    )
    assert proc.returncode == 1 and "export it with --precision int8" in proc.stderr


def test_shipped_demo_records_its_int8_numbers():
    record = json.loads((DEMO / "manifest.json").read_text())["int8"]["vs_fp32"]
    assert {"psnr_db_mean", "ssim_mean", "speedup", "ort_cpu_p50_ms"} <= record.keys()
