"""The automatic engine choice (runtime/choice.py) on the shipped bundles' real records,
and numpy arrays through the Python API (runtime/arrays.py)."""

from __future__ import annotations

import copy
import json

import cv2
import numpy as np
import pytest
from conftest import ASSETS, run_cli

from styleship.errors import BackendUnavailable, InputError
from styleship.runtime import choice as ch
from styleship.runtime import image as im
from styleship.runtime.backends import available_backends
from styleship.runtime.bundle import Bundle
from styleship.runtime.stylizer import Stylizer

STVAE = ASSETS / "models/stvae-demo.stvae"
VQVAE = ASSETS / "models/vqvae-demo.vqvae"
needs_openvino = pytest.mark.skipif(
    available_backends()["openvino"] is not None, reason="needs openvino"
)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLESHIP_CACHE", str(tmp_path / "cache" / "styles"))
    return tmp_path / "cache" / "choices"


def test_clearance_follows_the_bundles_quality_records():
    st, vq = Bundle.load(STVAE), Bundle.load(VQVAE)
    assert ch.clearance(st, "ort-cpu", "fp32") == (True, "the fp32 reference")
    ok, why = ch.clearance(st, "openvino", "int8")  # its OpenVINO record, bar 30
    worst = min(r["psnr_db"] for r in st.manifest["precision_parity"]["int8"]["results"])
    assert worst > 30 and ok and f"{worst:.1f} dB" in why and "openvino" in why
    ok, why = ch.clearance(st, "ort-cpu", "int8")  # ONNX Runtime's own record: 35.1 dB min
    assert ok and "35.1 dB" in why and "ONNX Runtime" in why
    ok, why = ch.clearance(vq, "openvino", "bf16")  # its record is under the 40 dB bar
    recorded = min(r["psnr_db"] for r in vq.manifest["precision_parity"]["bf16"]["results"])
    assert recorded < 40 and not ok and f"{recorded:.1f} dB" in why and "40 dB bar" in why
    ok, why = ch.clearance(st, "openvino", "fp16")  # fp16 is measured on ORT only
    assert not ok and "no OpenVINO fp16 record" in why


def test_a_failed_or_missing_record_is_never_a_candidate():
    b = Bundle.load(STVAE)
    manifest = copy.deepcopy(b.manifest)
    manifest["precision_parity"]["int8"]["passed"] = False
    del manifest["int8"]["vs_fp32"]
    tampered = Bundle(b.path, manifest)
    found, skipped = ch.candidates(tampered, ("openvino", "ort-cpu"))
    pairs = {(c.backend, c.precision) for c in found}
    assert ("openvino", "int8") not in pairs and ("ort-cpu", "int8") not in pairs
    assert "under the 30 dB bar" in skipped["openvino int8"]
    assert "records no int8" in skipped["ort-cpu int8"]


def test_choice_is_the_fastest_measured_pair_then_cached(empty_cache, monkeypatch):
    b = Bundle.load(STVAE)
    lines = []
    choice = ch.choose(b, backend="ort-cpu", log=lines.append)
    measured = [(m["backend"], m["precision"]) for m in choice.measured]
    assert sorted(measured) == [("ort-cpu", "fp32"), ("ort-cpu", "int8")]
    times = [m["p50_ms"] for m in choice.measured]
    assert times == sorted(times) and all(t > 0 for t in times)
    assert (choice.backend, choice.precision) == measured[0]
    assert choice.source == "measured now" and len(lines) == 2
    saved = json.loads((empty_cache / f"{choice.key}.json").read_text())
    assert saved["precision"] == choice.precision

    def no_timing(*a, **k):
        raise AssertionError("a cached choice must not be measured again")

    monkeypatch.setattr(ch, "time_pair", no_timing)
    again = ch.choose(b, backend="ort-cpu")
    assert again.source == "cached" and (again.backend, again.precision) == measured[0]
    # Another scope (any backend) is its own measurement, not this one.
    assert ch.cache_key(b, {"backend": None, "precision": None}) != choice.key


def test_both_flags_skip_the_measurement_and_impossible_asks_are_one_line(empty_cache, monkeypatch):
    b = Bundle.load(STVAE)
    monkeypatch.setattr(ch, "time_pair", lambda *a, **k: pytest.fail("measured"))
    given = ch.choose(b, "ort-cpu", "fp32")
    assert (given.backend, given.precision, given.source) == ("ort-cpu", "fp32", "given")
    with pytest.raises(BackendUnavailable, match="nothing can run stvae-demo.* with tf32 here"):
        ch.choose(b, precision="tf32")


def test_stylizer_runs_the_choice_and_says_why(empty_cache):
    with Stylizer(STVAE, cache_dir=None) as st:
        assert (st.backend_name, st.precision) == (st.choice.backend, st.choice.precision)
        assert st.engine.info().precision == st.precision
        assert st.choice.reason.startswith("fastest of")
        assert st.choice.quality
    with Stylizer(STVAE, backend="auto", precision="auto", cache_dir=None) as st2:
        assert st2.choice.source == "cached"


def test_numpy_arrays_in_and_out_match_the_file_path(contents, styles):
    with Stylizer(STVAE, "ort-cpu", precision="fp32", cache_dir=None) as st:
        reference = im.to_uint8(st.stylize(contents[1], styles[0]).rgb)  # RGB
        bgr = cv2.imread(str(contents[1]))
        out = st.stylize(bgr, styles[0], channels="BGR")
        assert out.dtype == np.uint8 and out.shape == bgr.shape
        assert np.abs(out[:, :, ::-1].astype(int) - reference.astype(int)).max() <= 1
        rgb = st.stylize(bgr[:, :, ::-1], cv2.imread(str(styles[0]))[:, :, ::-1])
        assert np.abs(rgb.astype(int) - reference.astype(int)).max() <= 1
        floats = st.stylize(bgr[:, :, ::-1].astype(np.float32) / 255, styles[0])
        assert floats.dtype == np.float32 and 0.0 <= floats.min() <= floats.max() <= 1.0
        rgba = np.dstack([bgr, np.full(bgr.shape[:2], 128, np.uint8)])
        with_alpha = st.stylize(rgba, styles[0], channels="BGR")
        assert with_alpha.shape[2] == 4 and (with_alpha[:, :, 3] == 128).all()
        with pytest.raises(InputError, match="height × width × 3"):
            st.stylize(np.zeros((2, 64, 64, 3), np.uint8), styles[0])
        with pytest.raises(InputError, match="channels must be one of RGB, BGR"):
            st.stylize(bgr, styles[0], channels="HSV")
        with pytest.raises(InputError, match=r"values in \[0, 1\]"):
            st.stylize(bgr.astype(np.float32), styles[0])


def test_cli_prints_the_engine_and_why(tmp_path, contents, styles):
    done = run_cli("stylize", contents[1], "-m", STVAE, "-s", styles[0], "-o", tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["choice"]["backend"] == data["backend"] and data["choice"]["reason"]
    human = run_cli("stylize", contents[1], "-m", STVAE, "-s", styles[0], "-o", tmp_path / "h")
    assert f"engine: {data['backend']} {data['precision']}" in human.stderr
    doctor = run_cli("doctor", "-m", STVAE, "--json")
    chosen = json.loads(doctor.stdout)["engines"]["chosen"][str(STVAE)]
    assert (chosen["backend"], chosen["precision"]) == (data["backend"], data["precision"])
    assert chosen["source"] == "cached"  # measured once, by the stylize run above
    bad = run_cli("stylize", contents[1], "-m", STVAE, "-s", styles[0], "-o", tmp_path,
                  "--precision", "tf32")  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.startswith("error: nothing can run")
    assert "Traceback" not in bad.stderr


@needs_openvino
def test_openvino_keeps_compiled_models_in_the_user_cache(empty_cache):
    from styleship.runtime.backends import create_backend

    with create_backend("openvino") as engine:
        engine.load(Bundle.load(STVAE), "stylizer", "cpu", "fp32")
    folder = empty_cache.parent / "openvino"
    assert folder.is_dir() and any(folder.iterdir())


def test_a_batching_gain_is_measured_again_before_batching_turns_on(monkeypatch):
    # A slow spell over a whole first measurement (batch 1 at 46 ms where it runs in 31, as
    # seen at a server's start) must not turn batching on by itself.
    spells = iter([{1: 46.4, 4: 39.8}, {1: 31.2, 4: 34.6}])
    calls = []

    def fake(bundle, backend, precision, side, batches, stat):
        calls.append(batches)
        return next(spells)

    monkeypatch.setattr(ch, "per_image_ms", fake)
    record = ch._batching(None, "openvino", "int8")
    assert len(calls) == 2
    assert record["helps"] is False
    assert (record["batch1_ms"], record["per_image_ms"]) == (31.2, 34.6)
    # A gain that holds in both measurements turns it on; no gain is not measured twice.
    spells = iter([{1: 40.0, 4: 20.0}, {1: 38.0, 4: 21.0}])
    assert ch._batching(None, "ort-cuda", "fp16")["helps"] is True
    spells, calls = iter([{1: 31.0, 4: 34.0}]), []
    assert ch._batching(None, "openvino", "int8")["helps"] is False and len(calls) == 1


def test_serve_batches_only_where_the_measurement_says_so(empty_cache):
    from styleship.serve.server import ServeConfig, _batching, _model_config

    with Stylizer(STVAE, "ort-cpu", precision="fp32", cache_dir=None) as st:
        on, why = _batching(st, ServeConfig(batching="auto"))
        record = st.choice.batching
        assert on == (record["per_image_ms"] * ch.BATCH_GAIN <= record["batch1_ms"])
        assert f"batch {ch.PROBE_BATCH} runs" in why
        assert _batching(st, ServeConfig(batching="off")) == (False, "batching off as asked")
        # A verdict cached by an older method (a median, swayed by one slow moment) is
        # measured again, not trusted.
        st.choice.batching = {"helps": True, "batch": 4, "gain": 1.16}
        assert ch.batching(st.bundle, st.choice)["method"] == ch.BATCHING_METHOD
    pytest.importorskip("pytriton")
    unbatched = _model_config(ServeConfig(max_batch=16), batched=False)
    assert unbatched.max_batch_size == 16  # what is queued when the instance frees
    assert unbatched.batcher.max_queue_delay_microseconds == 0
    batched = _model_config(ServeConfig(max_batch=16, max_queue_delay_us=3000), batched=True)
    assert batched.max_batch_size == 16 and batched.batcher.max_queue_delay_microseconds == 3000
    # Preferred sizes with no queue delay left requests queued ~400 ms when arrivals paused.
    assert unbatched.batcher.preferred_batch_size is None
    assert batched.batcher.preferred_batch_size is None
    # Any queue policy made this Triton hold queued requests for its 500 ms poll: none unless
    # a bound or a timeout is asked for, and then both as asked.
    assert unbatched.batcher.default_queue_policy is None
    assert batched.batcher.default_queue_policy is None
    bounded = _model_config(ServeConfig(max_queue=8), batched=False).batcher.default_queue_policy
    assert (bounded.max_queue_size, bounded.default_timeout_microseconds) == (8, 0)
    timed = _model_config(ServeConfig(timeout_ms=250), batched=True).batcher.default_queue_policy
    assert (timed.max_queue_size, timed.default_timeout_microseconds) == (0, 250_000)
