"""The roofline (FLOPs counted from ONNX graphs, peak probes, achieved GFLOP/s and its share of
the peak) and the cost-vs-pixels fit, on graphs and rows whose answers are known exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT

from styleship.errors import InputError, ModelError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from styleship.bench import probe, roofline  # noqa: E402
from styleship.bench.flops import count_flops  # noqa: E402
from styleship.bench.markdown import render_markdown  # noqa: E402
from styleship.bench.report import render_csv  # noqa: E402
from styleship.bench.scaling import cost_vs_pixels, fit_line  # noqa: E402


def _const(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def _graph(nodes, inits, h="h", w="w") -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, h, w])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _known_model() -> onnx.ModelProto:
    """Conv (stride 2, groups 1) → ConvTranspose (×2) → flatten to (N, C, H·W) through shape
    arithmetic → MatMul with (H·W, 5) → Gemm(transA) on a constant."""
    nodes = [
        helper.make_node("Conv", ["x", "wc"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("ConvTranspose", ["c", "wt"], ["t"], strides=[2, 2]),
        helper.make_node("Shape", ["t"], ["s"]),
        helper.make_node("Gather", ["s", "idx"], ["nc"], axis=0),
        helper.make_node("Concat", ["nc", "minus1"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["t", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "wm"], ["m"]),
        helper.make_node("Gemm", ["a", "b"], ["y"], transA=1),
    ]
    inits = [
        _const("wc", (8, 3, 3, 3)),
        _const("wt", (8, 4, 2, 2)),
        numpy_helper.from_array(np.array([0, 1], np.int64), "idx"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
        _const("wm", (64 * 64, 5)),
        _const("a", (7, 6)),  # transposed: M = 6, K = 7
        _const("b", (7, 9)),
    ]
    return _graph(nodes, inits)


def test_flops_of_a_hand_built_graph_are_exact():
    count = count_flops(_known_model(), {"x": (2, 3, 64, 64)})
    conv = 2 * (2 * 8 * 32 * 32) * (3 * 3 * 3)  # outputs × (Cin/g · kh · kw)
    convt = 2 * (2 * 8 * 32 * 32) * (4 * 2 * 2)  # inputs × (Cout/g · kh · kw)
    matmul = 2 * (2 * 4 * 5) * (64 * 64)  # (N, C, H·W) @ (H·W, 5)
    gemm = 2 * 6 * 9 * 7
    assert count.by_op == {"Conv": conv, "ConvTranspose": convt, "MatMul": matmul, "Gemm": gemm}
    assert count.total == conv + convt + matmul + gemm and count.nodes == 4


def test_a_dynamic_graph_scales_with_the_pixels():
    """Conv layers with 'same' padding: FLOPs are exactly proportional to H·W."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w2"], ["y"]),
    ]
    model = _graph(nodes, [_const("w1", (16, 3, 3, 3)), _const("w2", (3, 16, 1, 1))])
    small = count_flops(model, {"x": (1, 3, 64, 48)}).total
    large = count_flops(model, {"x": (1, 3, 128, 96)}).total
    assert small == 2 * 64 * 48 * (16 * 27 + 3 * 16)
    assert large == 4 * small


def test_a_shipped_bundle_counts_at_any_size():
    from styleship.runtime.bundle import Bundle

    bundle = Bundle.load(ROOT / "assets" / "models" / "stvae-demo.stvae")
    counter = roofline.FlopCounter({"m": bundle})
    at_256, at_512 = (counter.per_image("m", "stylizer", s) for s in (256, 512))
    # Convolutions and the covariance MatMuls scale with the pixels; only the tiny style
    # MLP (Gemm) does not.
    assert at_512 / at_256 == pytest.approx(4, rel=1e-3)
    assert counter.per_image("m", "fused", 256) > at_256  # the style encoder on top
    assert counter.per_image("nope", "stylizer", 256) is None and not counter.errors


def test_an_input_without_a_shape_is_an_error():
    with pytest.raises(ModelError, match="no shape given for graph input 'x'"):
        count_flops(_known_model(), {})


# -- the peak probes --------------------------------------------------------------
@pytest.fixture
def small_probes(monkeypatch):
    monkeypatch.setitem(probe.GEMM, "cpu", 128)
    monkeypatch.setitem(probe.CONV, "cpu", {"channels": 32, "side": 16, "kernel": 3})
    monkeypatch.setattr(probe, "PROBE_TIMING", probe.Timing(0, 2, 3, 0.0, 1.0))


def test_probe_graphs_compute_what_they_claim(small_probes):
    ort = pytest.importorskip("onnxruntime")
    for name in ("gemm", "conv"):
        outs = {}
        for int8 in (False, True):
            model = probe.probe_graph(name, int8).SerializeToString()
            session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            outs[int8] = session.run(None, {"x": probe._feed(name)})[0]
        x, w = probe._feed(name), probe._weight(name)
        if name == "gemm":
            np.testing.assert_allclose(outs[False], x @ w, rtol=1e-4, atol=1e-4)
        # int8 is the same product within its rounding
        assert np.abs(outs[True] - outs[False]).max() < 0.05 * np.abs(outs[False]).max()
    assert probe.probe_flops("gemm") == 2 * 128**3


def test_probes_report_gflops_per_precision_or_why_not(small_probes):
    pytest.importorskip("onnxruntime")
    results = probe.run_probes("ort-cpu", "cpu")
    assert {(r["precision"], r["probe"]) for r in results} == {
        (p, k) for p in ("fp32", "bf16", "int8") for k in ("gemm", "conv")
    }
    for r in results:
        if r["precision"] == "bf16":
            assert r["status"] == "skipped" and "no bf16" in r["reason"]
        else:
            assert r["status"] == "ok" and r["p50_ms"] > 0
            assert r["gflops"] == pytest.approx(r["flops"] / r["p50_ms"] / 1e6)


def test_peaks_take_the_best_probe_of_the_best_pass():
    ok = {"status": "ok", "shape": "s", "flops": 1}
    passes = [
        [
            ok | {"engine": "a", "precision": "fp32", "probe": "gemm", "gflops": 100.0},
            ok | {"engine": "b", "precision": "fp32", "probe": "conv", "gflops": 120.0},
            {"engine": "c", "status": "skipped", "reason": "not installed"},
        ],
        [
            ok | {"engine": "a", "precision": "fp32", "probe": "gemm", "gflops": 130.0},
            ok | {"engine": "b", "precision": "fp32", "probe": "conv", "gflops": 90.0},
            ok | {"engine": "a", "precision": "int8", "probe": "gemm", "gflops": 400.0},
        ],
    ]
    merged = roofline.merge_probes(passes)
    a = next(p for p in merged if (p["engine"], p.get("precision")) == ("a", "fp32"))
    assert a["gflops"] == 130.0 and a["passes"] == 2 and a["pass_gflops"] == [100.0, 130.0]
    table = roofline.peaks(merged)
    assert table["fp32"]["gflops"] == 130.0 and table["fp32"]["engine"] == "a"
    assert table["int8"]["gflops"] == 400.0 and "bf16" not in table
    assert roofline.peak_for("tf32", table) == 130.0 and roofline.peak_for("bf16", table) is None


def _row(**kw) -> dict:
    base = {"status": "ok", "method": "stvae", "model": "m", "backend": "openvino"}
    base |= {"precision": "fp32", "size": 256, "batch": 1, "style": "cached", "view": "compute"}
    return base | {"p50_ms": 10.0, "budget": None, "reason": None} | kw


def test_rows_get_achieved_gflops_and_their_share_of_the_peak():
    flops = {("m", "stylizer", 256): 2e9, ("m", "fused", 256): 3e9}
    rows = [
        _row(),
        _row(batch=4, p50_ms=40.0, precision="int8"),
        _row(style="uncached", precision="bf16"),
        _row(view="end-to-end", p50_ms=20.0),
        _row(method="gatys", model="gatys", budget=100),
        _row(status="skipped", p50_ms=None),
        _row(method="gatys", model="gatys", budget=100, p50_ms=1000.0, call_flops=3e9),
    ]
    table = {"fp32": {"gflops": 400.0}, "int8": {"gflops": 1000.0}}
    roofline.add_roofline(rows, lambda m, g, s: flops.get((m, g, s)), table)
    assert rows[0]["achieved_gflops"] == pytest.approx(200.0)
    assert rows[0]["fraction_of_peak"] == pytest.approx(0.5)
    assert rows[1]["achieved_gflops"] == pytest.approx(200.0)  # 4 images per 40 ms
    assert rows[1]["fraction_of_peak"] == pytest.approx(0.2)
    assert rows[2]["gflop_per_image"] == pytest.approx(3.0) and rows[2]["peak_gflops"] is None
    assert rows[2]["fraction_of_peak"] is None  # no bf16 peak measured
    assert rows[3]["achieved_gflops"] == pytest.approx(100.0)
    assert "achieved_gflops" not in rows[4] and "achieved_gflops" not in rows[5]
    assert rows[6]["gflop_per_image"] == pytest.approx(300.0)  # 100 calls of 3 GFLOP
    assert rows[6]["achieved_gflops"] == pytest.approx(300.0)  # in one second


# -- cost as work grows ----------------------------------------------------------------
def test_fit_line_recovers_a_line():
    fit = fit_line([0.1, 0.3, 1.0], [5 + 0.1 * 80, 5 + 0.3 * 80, 5 + 80])
    assert fit["slope"] == pytest.approx(80) and fit["intercept"] == pytest.approx(5)
    assert fit["r2"] == pytest.approx(1.0) and fit["points"] == 3
    assert fit_line([0.5, 0.5], [1, 2]) is None


def test_cost_vs_pixels_fits_the_best_path():
    rows = []
    for size in (256, 512, 1024, 2048):
        mp = size * size / 1e6
        rows.append(_row(size=size, p50_ms=3 + 100 * mp, peak_rss_mib=200 + 400 * mp))
        rows.append(_row(size=size, backend="ort-cpu", p50_ms=1 + 300 * mp, peak_rss_mib=1))
    rows.append(_row(size=512, batch=8, p50_ms=1.0))  # another batch: not a point
    summary = [
        {"model": "m", "size": s, "best_backend": "openvino", "best_precision": "fp32"}
        for s in (256, 512)
    ] + [{"model": "m", "size": 1024, "best_backend": "ort-cpu", "best_precision": "fp32"}]
    (fit,) = cost_vs_pixels(rows, summary)
    assert (fit["backend"], fit["sizes"]) == ("openvino", [256, 512, 1024, 2048])
    assert fit["ms_per_mp"] == pytest.approx(100) and fit["ms_intercept"] == pytest.approx(3)
    assert fit["mib_per_mp"] == pytest.approx(400) and fit["mib_intercept"] == pytest.approx(200)
    uhd = fit["predicted"]["4K UHD (3840×2160)"]
    assert uhd["ms"] == pytest.approx(3 + 100 * 3840 * 2160 / 1e6)


# -- reports -----------------------------------------------------------------------------
def _results(rows: list[dict], roof: dict | None) -> dict:
    results = {
        "environment": {"cpu": "x", "usable_cores": 2, "git_commit": "abc"},
        "suite": {"name": "t", "description": "", "content": "c.jpg", "style": "s.jpg"},
        "vgg": {"source": "random", "seed": 0},
        "models": {},
        "started": "now",
        "wall_seconds": 60,
        "rows": rows,
        "summary": [],
        "peer": [],
    }
    return results | ({"roofline": roof} if roof else {})


def test_markdown_and_csv_carry_the_roofline_columns():
    stats = {"p90_ms": 11.0, "p99_ms": None, "mean_ms": 10.0, "std_ms": 1.0, "iterations": 5}
    stats |= {"images_per_s": 100.0, "load_ms": 1.0, "first_call_ms": 1.0, "peak_rss_mib": 9.0}
    new = _row(**stats, gflop_per_image=2.0, achieved_gflops=200.0, fraction_of_peak=0.5)
    old = _row(**stats, size=512)
    roof = {
        "note": "how",
        "peaks": {"fp32": {"gflops": 400.0, "engine": "openvino", "probe": "gemm"}},
        "probes": [
            {"status": "ok", "engine": "openvino", "precision": "fp32", "probe": "gemm"}
            | {"shape": "MatMul 2048³", "p50_ms": 43.0, "gflops": 400.0, "passes": 3},
            {"status": "skipped", "engine": "torch", "reason": "not installed"},
        ],
    }
    md = render_markdown(_results([new, old], roof))
    header, _, first, second = md.split("## Latency (compute only)")[1].strip().splitlines()[:4]
    assert header.endswith("| GFLOP/image | GFLOP/s | of peak |")
    assert first.endswith("| 2.00 | 200 | 50% |") and second.endswith("| - | - | - |")
    assert "## Roofline" in md and "| fp32 | 400 | openvino, gemm |" in md
    assert "not probed: torch: not installed" in md
    csv_header, csv_first = render_csv(_results([new], roof)).splitlines()[:2]
    assert csv_header.split(",")[-4:] == [
        "gflop_per_image",
        "achieved_gflops",
        "peak_gflops",
        "fraction_of_peak",
    ]
    assert csv_first.split(",")[-4:] == ["2.0", "200.0", "", "0.5"]
    assert "## Roofline" not in render_markdown(_results([old], None))
    summary = {"model": "m", "size": 256, "best_backend": "openvino", "best_precision": "fp32"}
    summary |= {"best_p50_ms": 10.0, "best_psnr_vs_fp32_db": None, "torch_eager_p50_ms": None}
    summary |= {"speedup_vs_torch_eager": None, "end_to_end_p50_ms": None, "speedup_vs_gatys": {}}
    summary |= {"end_to_end_overhead": None, "best_fraction_of_peak": 0.25}
    md = render_markdown(_results([new], roof) | {"summary": [summary]})
    head = [ln for ln in md.split("## Headline")[1].splitlines() if ln.startswith("|")]
    assert "| of peak |" in head[0] and "| 25% |" in head[2]


def test_committed_results_render_with_and_without_the_roofline(tmp_path):
    """The committed run renders its roofline; the same rows as a run from before the roofline
    (no probes, no per-row fields, no fit) render `-` there and the cost fit from their rows."""
    from styleship.bench.report import write_reports

    results = json.loads((ROOT / "benchmarks/results/cpu/results.json").read_text())
    write_reports(results, tmp_path / "now")
    md = (tmp_path / "now" / "results.md").read_text()
    assert "## Roofline" in md and "## Cost as work grows" in md
    fields = ("gflop_per_image", "achieved_gflops", "peak_gflops", "fraction_of_peak")
    old = {k: v for k, v in results.items() if k not in ("roofline", "scaling")}
    old["rows"] = [{k: v for k, v in r.items() if k not in fields} for r in results["rows"]]
    old["summary"] = [
        {k: v for k, v in r.items() if not k.startswith(("best_achieved", "best_fraction"))}
        for r in results["summary"]
    ]
    write_reports(old, tmp_path / "old")
    md = (tmp_path / "old" / "results.md").read_text()
    assert "## Roofline" not in md and "## Cost as work grows" in md
    assert (tmp_path / "old" / "roofline.png").read_bytes()[:4] == b"\x89PNG"


def test_peak_probe_must_be_a_boolean(tmp_path):
    from styleship.bench.config import parse_suite

    text = 'content = "c.jpg"\nstyle = "s.jpg"\npeak_probe = "no"\n'
    with pytest.raises(InputError, match="peak_probe must be true or false"):
        parse_suite(text, tmp_path / "s.toml")
    assert parse_suite(text.replace('"no"', "false"), tmp_path / "s.toml").peak_probe is False


def test_the_peak_worker_kind_returns_the_probes(small_probes, tmp_path):
    pytest.importorskip("onnxruntime")
    from styleship.bench.worker import run_job

    job = {"kind": "peak", "engine": "ort-cpu", "device": "cpu"}
    job |= {"suite_text": 'content = "c.jpg"\nstyle = "s.jpg"\n', "suite_path": str(tmp_path / "s")}
    result = run_job(job)
    assert result["status"] == "ok" and len(result["probes"]) == 6
    assert {p["engine"] for p in result["probes"]} == {"ort-cpu"}


def test_a_graph_that_cannot_be_counted_is_recorded_not_fatal(tmp_path):
    """An operator onnx cannot infer feeds a Conv: the count is refused with the reason, and
    the suite's counter records it instead of losing the run."""
    nodes = [
        helper.make_node("Mystery", ["x"], ["m"], domain="example.custom"),
        helper.make_node("Conv", ["m", "w"], ["y"]),
    ]
    model = _graph(nodes, [_const("w", (4, 3, 1, 1))])
    model.opset_import.append(helper.make_opsetid("example.custom", 1))
    with pytest.raises(ModelError, match="Conv .*shapes not resolved|no shape for 'm'"):
        count_flops(model, {"x": (1, 3, 8, 8)})
    path = tmp_path / "g.onnx"
    onnx.save(model, path)

    from styleship.runtime.bundle import Bundle

    x = {"name": "x", "shape": ["batch", 3, "height", "width"], "kind": "content"}
    y = {"name": "y", "shape": ["batch", 3, "height", "width"], "kind": "image"}
    graphs = {"stylizer": {"inputs": [x], "outputs": [y], "files": {"fp32": path.name}}}
    bundle = Bundle(tmp_path, {"name": "m", "family": "stvae", "graphs": graphs})
    counter = roofline.FlopCounter({"m": bundle})
    assert counter.per_image("m", "stylizer", 8) is None
    assert "no shape for 'm'" in counter.errors["m stylizer 8"]


def test_headline_counts_int8_at_30_db_and_bf16_at_40_and_names_the_ceiling():
    from styleship.bench.suite import summarize

    def row(backend, precision, ms, psnr=None, gflop=10.0):
        return {
            "status": "ok", "method": "stylizer", "model": "m", "size": 512, "batch": 1,
            "style": "cached", "view": "compute", "backend": backend, "precision": precision,
            "p50_ms": ms, "psnr_vs_fp32_db": psnr, "gflop_per_image": gflop,
        }  # fmt: skip

    rows = [
        row("torch", "fp32", 100.0),
        row("openvino", "bf16", 40.0, psnr=39.0),  # fastest, but under bf16's 40 dB
        row("openvino", "int8", 50.0, psnr=31.0),  # int8's bar is 30 dB
        row("ort-cpu", "int8", 45.0, psnr=29.0),  # under it
    ]
    peaks = {"fp32": {"gflops": 500.0}, "int8": {"gflops": 2000.0}}
    (best,) = summarize(rows, peaks)
    assert (best["best_backend"], best["best_precision"]) == ("openvino", "int8")
    assert best["speedup_vs_torch_eager"] == pytest.approx(2.0)
    # 10 GFLOP at the fastest peak (2,000 GFLOP/s) is 5 ms: 20× eager at most.
    assert best["ceiling_ms"] == pytest.approx(5.0)
    assert best["ceiling_vs_torch_eager"] == pytest.approx(20.0)
    assert summarize(rows)[0]["ceiling_ms"] is None  # no probes, no ceiling
