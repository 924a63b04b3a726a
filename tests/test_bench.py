"""The benchmark suite: statistics, config, skip reasons, reports, and a real cpu-quick run."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli

from styleship.bench.config import BenchCase, RunBlock, Timing, load_suite, parse_suite
from styleship.bench.report import compare, fmt, render_csv
from styleship.bench.timing import Stats, measure, measure_calls
from styleship.errors import InputError
from styleship.runtime.memory import PeakMemory

pytest.importorskip("torch")


# -- statistics ---------------------------------------------------------------
def test_percentiles_on_known_samples():
    s = Stats.from_samples(list(range(1, 101)))  # 1..100 ms
    assert (s.p50_ms, s.p90_ms, s.p99_ms) == pytest.approx((50.5, 90.1, 99.01))
    assert s.mean_ms == pytest.approx(50.5)
    assert s.std_ms == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert (s.min_ms, s.max_ms, s.iterations) == (1, 100, 100)
    assert s.images_per_s(8) == pytest.approx(8 * 1000 / 50.5)
    one = Stats.from_samples([7.0])
    assert (one.p50_ms, one.p99_ms, one.std_ms) == (7.0, 7.0, 0.0)
    with pytest.raises(ValueError):
        Stats.from_samples([])
    with pytest.raises(ValueError):
        Stats.from_samples([1.0, float("nan")])


def test_p99_needs_enough_samples_and_passes_take_the_median_p50():
    assert Stats.from_samples(list(range(1, 100)), p99_min_samples=100).p99_ms is None
    assert Stats.from_samples(list(range(1, 101)), p99_min_samples=100).p99_ms == pytest.approx(
        99.01
    )
    # One slow pass (the machine drifted) moves the median of the passes' p50s least.
    s = Stats.from_passes([[10.0] * 5, [11.0] * 5, [30.0] * 5])
    assert s.p50_ms == 11.0 and s.passes == 3 and s.pass_p50_ms == (10.0, 11.0, 30.0)
    assert s.iterations == 15 and s.max_ms == 30.0 and s.p99_ms is None


def test_measure_calls_alternates_the_views():
    order: list[str] = []
    timing = Timing(warmup=1, min_iterations=3, max_iterations=3, min_seconds=0)
    out = measure_calls({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, timing)
    assert order == ["a", "b"] * 4  # one warm-up round, then three timed rounds, interleaved
    assert len(out["a"].ms) == len(out["b"].ms) == 3 and len(out["a"].faults) == 3


def test_measure_separates_warmup_and_respects_limits():
    calls = []
    stats = measure(lambda: calls.append(1), Timing(warmup=2, min_iterations=5, min_seconds=0))
    assert stats.iterations == 5 and len(calls) == 7
    calls.clear()
    stats = measure(
        lambda: calls.append(1),
        Timing(warmup=0, min_iterations=3, max_iterations=4, min_seconds=60),
    )
    assert stats.iterations == 4  # max_iterations wins over min_seconds


def test_peak_memory_sees_a_short_lived_allocation():
    with PeakMemory() as before:
        pass
    with PeakMemory() as mem:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
        block.sum()
        del block
    assert mem.peak_mib - before.peak_mib > 150


def test_worker_allocator_keeps_freed_memory():
    """Fresh processes re-fault large freed buffers unless glibc keeps them (issue #19)."""
    # malloc/free of 64 MiB, as torch frees an activation buffer after each call (numpy's
    # own allocator would ask for huge pages and hide the effect).
    script = """
import ctypes, resource, sys
from styleship.bench.worker import tune_allocator
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
if sys.argv[1] == "tuned":
    assert tune_allocator().startswith("glibc")
def faults():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_minflt + u.ru_majflt
def call():
    p = libc.malloc(64 * 2**20)
    libc.memset(p, 1, 64 * 2**20)
    libc.free(p)
call()
before = faults()
for _ in range(5):
    call()
print((faults() - before) // 5)
"""
    import subprocess
    import sys

    per_call = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True
            ).stdout
        )
        for mode in ("default", "tuned")
    }
    assert per_call["default"] > 10_000  # 16k pages of 4 KiB come back every time
    assert per_call["tuned"] < 100


# -- config ---------------------------------------------------------------------
BASE = """
name = "t"
content = "../assets/content/chelsea.jpg"
style = "../assets/styles/starry_night.jpg"
[[model]]
id = "m"
bundle = "../assets/models/stvae-demo.stvae"
"""


def _parse(extra: str):
    return parse_suite(BASE + extra, ROOT / "benchmarks" / "t.toml")


def test_config_expands_blocks_without_duplicates():
    suite = _parse(
        """
[[run]]
models = ["m"]
backends = ["ort-cpu", "openvino"]
precisions = ["fp32", "bf16"]
sizes = [256, 512]
[[run]]
models = ["m"]
backends = ["ort-cpu"]
sizes = [256]
batches = [1, 8]
styles = ["cached", "uncached"]
"""
    )
    cases = suite.cases()
    assert len(cases) == 2 * 2 * 2 + 4 - 1  # (ort-cpu fp32 256 b1 cached) is in both blocks
    assert len({c.key for c in cases}) == len(cases)
    assert suite.content.is_file() and suite.models["m"].bundle.is_dir()
    assert suite.block_of(BenchCase("m", "ort-cpu", "fp32", 256, 8, "uncached")).batches == (1, 8)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[[run]]\nmodels=['m']\nbackends=['onnx-gpu']\n", "unknown backend 'onnx-gpu'"),
        ("[[run]]\nmodels=['x']\nbackends=['ort-cpu']\n", "unknown model 'x'"),
        ("[[run]]\nmodels=['m']\nbackends=['ort-cpu']\nsizes=[250]\n", "multiples of 8"),
        ("[[run]]\nmodels=['m']\nbackends=['ort-cpu']\nbatch=[1]\n", "unknown key 'batch'"),
        ("[[run]]\nmodels=['m']\nbackends=['ort-cpu']\nprecisions=['fp8']\n", "unknown precision"),
        ("[timing]\nwarmup = -1\n", "non-negative"),
        ("[timing]\nmin_iterations = 5\nmax_iterations = 2\n", "min_iterations"),
        ("[[model]]\nid = 'm'\nfamily = 'stvae'\n", "duplicate model id"),
        ("[[model]]\nid = 'n'\n", "one of bundle, family or import"),
        ("[[model]]\nid = 'n'\nimport = 'vgg'\n", "import one of magenta"),
        ("[gatys]\nsizes = ['big']\n", "list of integers ≥ 1"),
        ("this is = not toml = ", "not valid TOML"),
    ],
)
def test_config_errors_name_the_problem(extra, message):
    with pytest.raises(InputError, match=message):
        _parse(extra)


def test_unknown_suite_lists_the_known_ones():
    with pytest.raises(InputError, match="known: .*cpu-quick"):
        load_suite("nope")


# -- skip reasons -------------------------------------------------------------------
def test_cases_that_cannot_run_here_are_skipped_with_the_reason(tmp_path):
    from styleship.bench.runner import Runner

    suite = _parse("")
    runner = Runner(suite, tmp_path, log=lambda m: None)
    block = RunBlock(models=("m",), backends=("ort-cpu",))
    rows = runner.run_case(BenchCase("m", "ort-cpu", "bf16", 64, 1, "cached"), block)
    assert rows[0]["status"] == "skipped" and "not bf16" in rows[0]["reason"]
    rows = runner.run_case(BenchCase("m", "torch", "fp16", 64, 1, "cached"), block)
    assert rows[0]["status"] == "skipped" and "needs a CUDA GPU" in rows[0]["reason"]
    runner.status["ort-cuda"] = "this onnxruntime build has no CUDAExecutionProvider"
    rows = runner.run_case(BenchCase("m", "ort-cuda", "fp32", 64, 1, "cached"), block)
    assert rows[0]["status"] == "skipped" and "CUDAExecutionProvider" in rows[0]["reason"]
    ok = runner.run_case(BenchCase("m", "ort-cpu", "fp32", 64, 2, "cached"), block)[0]
    assert ok["status"] == "ok" and ok["batch"] == 2 and ok["p50_ms"] > 0


def test_each_pass_runs_in_a_fresh_process(tmp_path):
    import os

    from styleship.bench.runner import Runner

    suite = _parse("[timing]\nwarmup = 0\nmin_iterations = 2\nmin_seconds = 0\npasses = 2\n")
    runner = Runner(suite, tmp_path, log=lambda m: None)
    case = BenchCase("m", "ort-cpu", "fp32", 64, 1, "cached")
    block = RunBlock(models=("m",), backends=("ort-cpu",), end_to_end=True)
    rows = runner.run_case(case, block)
    pids = [r["pid"] for r in runner.passes[case.key]]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    compute, e2e = rows
    assert (compute["view"], e2e["view"]) == ("compute", "end-to-end")
    assert compute["passes"] == e2e["passes"] == 2 and len(compute["pass_p50_ms"]) == 2
    assert compute["p50_ms"] == pytest.approx(np.median(compute["pass_p50_ms"]))
    assert (
        compute["faults_per_call"] >= 0 and 0 < compute["rss_growth_mib"] < compute["peak_rss_mib"]
    )
    assert compute["p99_ms"] is None  # four calls are no basis for a p99


def test_any_suite_renders_its_reports(tmp_path):
    """One feed-forward case at 128² and Gatys at another size with one budget: nothing to
    compare, so some plots are empty; the run still writes every file (was a traceback)."""
    suite = tmp_path / "tiny.toml"
    suite.write_text(
        BASE.replace("../assets", str(ROOT / "assets"))
        + "[timing]\nwarmup = 0\nmin_iterations = 2\nmin_seconds = 0\n"
        + '[[run]]\nmodels = ["m"]\nbackends = ["ort-cpu"]\nsizes = [128]\n'
        + "[gatys]\nsizes = [64]\nbudgets = [2]\ncalibration_calls = 1\n"
    )
    r = run_cli("bench", "--suite", suite, "--out", tmp_path / "out", "--work-dir", tmp_path / "w")
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("latency_vs_size", "throughput_vs_batch", "speedup_vs_gatys", "quality_vs_speed"):
        assert (tmp_path / "out" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    c = results["calibration"]
    assert c["calls"] == 1 and c["size"] == 64 and c["standalone_ms_per_call"] > 0
    assert c["suite_ms_per_call"] > 0 and isinstance(c["flagged"], bool)
    gatys = [x for x in results["rows"] if x["method"] == "gatys"]
    assert [g["budget"] for g in gatys] == [2]  # the calibration mark is not a budget row
    assert gatys[0]["ms_per_call"] == pytest.approx(gatys[0]["p50_ms"] / 2)
    # One closure call at 64², counted by torch: VGG-19's convolutions forward and backward.
    assert gatys[0]["call_flops"] > 2 * 64 * 64 * 64 * 3 * 9
    assert gatys[0]["gflop_per_image"] == pytest.approx(2 * gatys[0]["call_flops"] / 1e9)
    assert gatys[0]["achieved_gflops"] > 0 and "peaks" in results["roofline"]


# -- what a model needs exported, and a run stopped part-way ---------------------------
def test_exports_follow_what_the_cases_read():
    from styleship.bench.models import exports_needed

    gpu_quick = load_suite("gpu-quick")  # torch rows only: the checkpoint is enough
    assert exports_needed(gpu_quick, "stvae-full") == {
        "onnx": False,
        "fp16": False,
        "int8": False,
        "tiling": False,
    }
    gpu = load_suite("gpu")  # ORT and TensorRT at fp16: ONNX and the fp16 twins
    assert exports_needed(gpu, "stvae-full") == {
        "onnx": True,
        "fp16": True,
        "int8": False,
        "tiling": False,
    }
    cpu = load_suite("cpu")
    assert exports_needed(cpu, "stvae-full")["int8"] is True


SMALL_FAMILY = """
[[model]]
id = "small"
family = "stvae"
config = { width = 0.25, z_dim = 64 }
vgg = "random:0"
[timing]
warmup = 0
min_iterations = 2
max_iterations = 2
min_seconds = 0
[[run]]
models = ["small"]
backends = ["torch"]
precisions = ["fp32"]
sizes = [64]
batches = [1, 2, 3]
"""


def test_a_run_stopped_part_way_keeps_the_rows_it_measured(tmp_path, monkeypatch):
    """results.json after every case: stopping the run in its third case leaves the first
    two cases' rows (timings, not yet scored). The torch-only model is a checkpoint bundle."""
    from styleship.bench import suite as suite_module
    from styleship.bench.runner import Runner

    suite = parse_suite(
        "peak_probe = false\n" + BASE + SMALL_FAMILY, ROOT / "benchmarks" / "t.toml"
    )
    original, calls = Runner.measure_pass, []

    def measure_then_stop(self, case, block, index):
        calls.append(case.batch)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a kill at the budget looks like from here
        return original(self, case, block, index)

    monkeypatch.setattr(Runner, "measure_pass", measure_then_stop)
    out, work = tmp_path / "out", tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        suite_module.run_suite(suite, out, work)
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is False
    rows = results["rows"]
    assert [(r["backend"], r["batch"], r["status"]) for r in rows] == [
        ("torch", 1, "ok"),
        ("torch", 2, "ok"),
    ]
    assert all(r["p50_ms"] > 0 and "ssim_content" not in r for r in rows)
    (bundle,) = work.glob("small-*.stvae")
    assert not list(bundle.glob("*.onnx"))  # torch rows need the checkpoint, not an export
    assert (bundle / "checkpoint.safetensors").is_file()


def test_a_model_that_cannot_be_prepared_fails_its_rows_once(tmp_path, monkeypatch):
    from styleship.bench import runner as runner_module

    tries = []

    def broken(suite, model_id, work_dir, log):
        tries.append(model_id)
        raise RuntimeError("'x_cast_to_fp32' has been used as output names multiple times\nmore")

    monkeypatch.setattr(runner_module, "prepare_model", broken)
    runner = runner_module.Runner(_parse(SMALL_FAMILY), tmp_path, log=lambda m: None)
    block = RunBlock(models=("small",), backends=("torch",))
    rows = [
        runner.run_case(BenchCase("small", "torch", "fp32", 64, b, "cached"), block)[0]
        for b in (1, 2)
    ]
    assert tries == ["small"]
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert (
        rows[0]["reason"]
        == rows[1]["reason"]
        == ("preparing small failed: 'x_cast_to_fp32' has been used as output names multiple times")
    )


def test_gatys_can_follow_the_cases():
    suite = _parse("[gatys]\nsizes = [64]\nbudgets = [2]\nafter_cases = true\n")
    assert suite.gatys.after_cases is True and _parse("").gatys.after_cases is False
    with pytest.raises(InputError, match="after_cases must be true or false"):
        _parse("[gatys]\nafter_cases = 'yes'\n")


# -- a real run of cpu-quick ---------------------------------------------------------
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "quick"
    r = run_cli("bench", "--suite", "cpu-quick", "--out", out, "--work-dir", out.parent / "w")
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def _md_table(md: str, heading: str) -> list[dict[str, str]]:
    section = md.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def test_quick_suite_writes_every_file(quick_run):
    for name in ("results.json", "results.csv", "results.md"):
        assert (quick_run / name).stat().st_size > 0
    for name in ("latency_vs_size", "throughput_vs_batch", "speedup_vs_gatys", "quality_vs_speed"):
        assert (quick_run / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((quick_run / "results.json").read_text())
    assert results["environment"]["cpu"] and results["environment"]["usable_cores"] >= 1
    assert results["vgg"]["source"] == "random"
    statuses = {r["status"] for r in results["rows"]}
    assert "ok" in statuses and "failed" not in statuses
    methods = {r["method"] for r in results["rows"] if r["status"] == "ok"}
    assert methods == {"stvae", "vqvae", "magenta", "peer", "gatys"}
    views = {r["view"] for r in results["rows"] if r["status"] == "ok"}
    assert views == {"compute", "end-to-end", "tiled", "untiled"}
    tiled = [r for r in results["rows"] if r["view"] == "tiled"]
    assert tiled and all(r["tile"] == 128 and r["psnr_vs_untiled_db"] > 0 for r in tiled)
    int8 = [
        r
        for r in results["rows"]
        if r["precision"] == "int8" and r["status"] == "ok" and r["view"] == "compute"
    ]
    assert int8 and all(r["psnr_vs_fp32_db"] > 15 for r in int8)


def test_quick_suite_markdown_and_csv_match_the_json(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    md = (quick_run / "results.md").read_text()
    latency = _md_table(md, "Latency (compute only)")
    ok = [r for r in results["rows"] if r["status"] == "ok" and r["view"] == "compute"]
    ff = [r for r in ok if r["method"] != "gatys"]
    assert len(latency) == len(ff)
    for row, r in zip(latency, ff):
        assert (row["model"], row["backend"], row["precision"]) == (
            r["model"],
            r["backend"],
            r["precision"],
        )
        assert row["p50 ms"] == fmt(r["p50_ms"]) and row["p99 ms"] == fmt(r["p99_ms"])
        assert row["images/s"] == fmt(r["images_per_s"]) and row["n"] == str(r["iterations"])
    headline = _md_table(md, "Headline")
    assert [h["model"] for h in headline] == [s["model"] for s in results["summary"]]
    for h, s in zip(headline, results["summary"]):
        assert h["p50 ms"] == fmt(s["best_p50_ms"])
        for budget, x in s["speedup_vs_gatys"].items():
            assert h[f"× Gatys-{budget}"] == fmt(x, "x")
    gatys = _md_table(md, "Gatys baseline")
    assert [g["calls"] for g in gatys] == [str(r["budget"]) for r in ok if r["method"] == "gatys"]
    rows = list(csv.DictReader(io.StringIO((quick_run / "results.csv").read_text())))
    assert len(rows) == len(results["rows"])
    for row, r in zip(rows, results["rows"]):
        if r["status"] == "ok":
            assert float(row["p50_ms"]) == r["p50_ms"]
    assert render_csv(results) == (quick_run / "results.csv").read_text()


def test_quick_suite_scores_every_method_with_the_pretrained_yardstick(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    assert results["yardstick"]["source"].endswith("arbitrary_predict.onnx")
    timed = [
        r
        for r in results["rows"]
        if r["status"] == "ok" and r["view"] == "compute" and r["batch"] == 1
    ]
    # Every row of a block that scores quality (the 256² cost-vs-pixels block does not).
    scored = [r for r in timed if r["size"] == 128 or r["method"] == "gatys"]
    assert {r["model"] for r in scored} >= {"stvae-demo", "vqvae-demo", "magenta"}
    for r in scored:
        assert -1 <= r["style_match_floor"] <= 1 and -1 <= r["style_match"] <= 1, r
        assert 0 < r["content_ssim_gray"] <= 1
    # The pretrained model is its own reference (gain 1); Gatys gains style with its budget.
    teacher = next(r for r in scored if r["model"] == "magenta" and r["backend"] == "ort-cpu")
    assert teacher["precision"] == "fp32" and teacher["style_gain"] == pytest.approx(1.0)
    assert teacher["style_match"] > teacher["style_match_floor"]
    gatys = sorted((r for r in scored if r["method"] == "gatys"), key=lambda r: r["budget"])
    assert gatys[0]["style_match"] < gatys[-1]["style_match"]


def test_quick_suite_measures_the_peer_on_its_own_model(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    ok = [r for r in results["rows"] if r["status"] == "ok"]
    peer = [r for r in ok if r["method"] == "peer"]
    assert {r["view"] for r in peer} == {"compute", "end-to-end"}
    assert all(r["backend"] == "peer" and r["precision"] == "int8" for r in peer)
    ours = [r for r in ok if r["model"] == "magenta" and r["method"] != "peer"]
    compute = [r for r in ours if r["view"] == "compute"]
    assert compute and all(r["psnr_vs_peer_db"] > 20 for r in compute)
    assert all("output" not in r for r in results["rows"])  # temporary files stay out
    (summary,) = results["peer"]
    assert summary["size"] == 128 and summary["peer_p50_ms"] > 0
    assert summary["peer_end_to_end_p50_ms"] > summary["peer_p50_ms"]
    if summary["best_backend"]:
        # styleship's pick is at least as close to the float network as the peer's output.
        fp32 = summary["best_psnr_vs_fp32_db"]
        assert summary["best_precision"] == "fp32" or fp32 >= summary["peer_psnr_vs_fp32_db"]
        assert summary["speedup"] == pytest.approx(summary["peer_p50_ms"] / summary["best_p50_ms"])
    assert "## styleship vs the peer" in (quick_run / "results.md").read_text()


def test_quick_suite_speedups_are_ratios_of_the_same_run(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    gatys = {
        (r["size"], r["budget"]): r["p50_ms"]
        for r in results["rows"]
        if r["method"] == "gatys" and r["status"] == "ok"
    }
    for r in results["rows"]:
        if r["status"] == "ok" and r["method"] != "gatys" and r["view"] == "compute":
            for budget, x in r["speedup_vs_gatys"].items():
                expected = gatys[(r["size"], int(budget))] / (r["p50_ms"] / r["batch"])
                assert x == pytest.approx(expected)


def test_compare_and_render(quick_run, tmp_path):
    results = json.loads((quick_run / "results.json").read_text())
    slower = json.loads(json.dumps(results))
    for r in slower["rows"]:
        if r["status"] == "ok":
            r["p50_ms"] *= 1.5
    changes = compare(results, slower)
    assert changes and all(c["change"] == pytest.approx(0.5) for c in changes)
    copy = Path(shutil.copytree(quick_run, tmp_path / "copy"))
    (copy / "results.md").unlink()
    r = run_cli("bench", "--render", copy)
    assert (
        r.returncode == 0
        and (copy / "results.md").read_text() == (quick_run / "results.md").read_text()
    )
    r = run_cli("bench", "--compare", quick_run, copy, "--json")
    assert r.returncode == 0
    assert all(row["change"] == 0 for row in json.loads(r.stdout)["rows"])


def test_bench_errors_are_one_line(tmp_path):
    r = run_cli("bench", "--compare", tmp_path, tmp_path)
    assert r.returncode == 1 and r.stderr.strip().startswith("error: no benchmark results")
    r = run_cli("bench", "--suite", "nope", "--out", tmp_path)
    assert r.returncode == 1 and "unknown suite 'nope'" in r.stderr
    r = run_cli("bench")
    assert r.returncode == 2


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_gpu_suite_fails_clearly_without_a_gpu(tmp_path):
    r = run_cli("bench", "--suite", "gpu", "--out", tmp_path / "gpu")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error: this suite needs a CUDA GPU and none is visible here (nvidia-smi finds none)"
    ]
    assert not (tmp_path / "gpu").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_suites_parse(path):
    suite = load_suite(str(path))
    assert suite.cases() and suite.content.is_file() and suite.style.is_file()
    for spec in suite.models.values():
        assert spec.bundle is None or (spec.bundle / "manifest.json").is_file()
