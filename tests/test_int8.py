"""int8 export: QDQ graphs, the float islands, and the manifest's record against fp32."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import ROOT, run_cli

from styleship.export.fp16 import in_fp32_module
from styleship.export.int8 import content_convs, conv_keys
from styleship.runtime.stylizer import Stylizer

DEMO = ROOT / "assets" / "models" / "stvae-demo.stvae"


@pytest.fixture(scope="module")
def int8_bundle(small_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "small.stvae"
    # A bar only fp32 itself reaches: the search ranks every convolution by what it costs
    # alone, then keeps the worst in float until nothing quantised is left that fails.
    proc = run_cli(
        "export", small_checkpoint, "-o", out, "--precision", "int8", "--int8-min-psnr", "99"
    )
    assert proc.returncode == 0, proc.stderr
    return out


def _fed_int8(graph) -> set[str]:
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in graph.node if n.op_type == "Conv" and set(n.input[:2]) <= dq_out}


def test_export_writes_qdq_graphs_and_keeps_the_transform_float(int8_bundle):
    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    files = manifest["graphs"]["stylizer"]["files"]
    assert files["int8"] == "stylizer.int8.onnx"
    assert manifest["graphs"]["style_encoder"]["files"]["int8"] == "style_encoder.onnx"
    record = manifest["int8"]
    source = onnx.load(str(int8_bundle / files["fp32"]))
    convs = [n for n in source.graph.node if n.op_type == "Conv"]
    fixed = {n.name for n in convs if in_fp32_module(n)}
    candidates = [n for n in content_convs(source, {"content"}) if n not in fixed]
    assert fixed and candidates  # the ST-VAE transform's convolutions, and the rest
    search = record["search"]
    # Ends first: all quantised misses 99 dB, all in float is fp32 itself (no PSNR).
    assert search["trials"][0]["float_convs"] == 0 and search["trials"][0]["psnr_db_min"] < 99
    assert search["trials"][-1] == {"float_convs": len(candidates), "psnr_db_min": None}
    ranked = search["sensitivity"]
    assert sorted(r["conv"] for r in ranked) == sorted(candidates)
    assert [r["psnr_db_min"] for r in ranked] == sorted(r["psnr_db_min"] for r in ranked)
    # The float set is the fixed one plus the k most sensitive, k the smallest trial that passed.
    k = min(t["float_convs"] for t in search["trials"] if (t["psnr_db_min"] or 1e9) >= 99)
    expected = (
        fixed
        | {r["conv"] for r in ranked[:k]}
        | {n.name for n in convs}
        - {
            *candidates,
            *fixed,
        }
    )
    assert set(record["graphs"]["stylizer"]["float"]) == expected
    int8 = onnx.load(str(int8_bundle / files["int8"])).graph
    assert _fed_int8(int8) == {n.name for n in convs} - expected
    assert record["graphs"]["stylizer"]["quantised"] == len(convs) - len(expected)
    # The fused graph quantises the same layers (by weights), its style encoder none.
    fused = onnx.load(str(int8_bundle / manifest["graphs"]["fused"]["files"]["fp32"]))
    keys, fused_keys = conv_keys(source), conv_keys(fused)
    fused_int8 = _fed_int8(onnx.load(str(int8_bundle / "fused.int8.onnx")).graph)
    assert {fused_keys[n] for n in fused_int8} == {keys[n] for n in _fed_int8(int8)}
    vs = record["vs_fp32"]
    assert vs["size"] == 512 and len(vs["pairs"]) == 4 and vs["speedup"] > 0
    assert vs["min_psnr_db"] == 99


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
