"""TensorRT: everything up to the engine boundary runs here; the rest needs TensorRT and a GPU.

TensorRT's builder cannot be installed on these machines. A stand-in module
checks what `build_engines` asks of TensorRT (call order, flags, profiles,
files, errors); it never stands for an engine or a timing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from styleship.errors import BackendUnavailable, ExportError, ModelError
from styleship.runtime.backends import available_backends, create_backend
from styleship.runtime.backends._cuda import GpuIdentity
from styleship.runtime.bundle import Bundle
from styleship.runtime.engines import check_engine, engine_dir, pick_profile, profiles

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
ROOT = Path(__file__).resolve().parents[1]
GPU = GpuIdentity("Stand-in GPU", 9, 0)


@pytest.fixture
def bundle(bundle_copy) -> Bundle:
    return Bundle.load(bundle_copy)


# -- profiles -------------------------------------------------------------------
def test_profiles_are_nested_and_tuned_at_each_size(bundle):
    built = profiles(bundle.graph("stylizer"), [1024, 256, 512], max_batch=16, min_side=16)
    assert len(built) == 3
    content = [p["content"] for p in built]
    assert [c["opt"] for c in content] == [[1, 3, 256, 256], [1, 3, 512, 512], [1, 3, 1024, 1024]]
    assert all(c["min"] == [1, 3, 16, 16] for c in content)
    assert [c["max"][2] for c in content] == [256, 512, 1024]
    assert built[0]["style_matrix"] == {"min": [1, 32, 32], "opt": [1, 32, 32], "max": [16, 32, 32]}
    assert built[0]["alpha"] == {"min": [1], "opt": [1], "max": [16]}
    with pytest.raises(ModelError, match="multiples of 8"):
        profiles(bundle.graph("stylizer"), [250], 16, 16)
    with pytest.raises(ModelError, match="opt batch"):
        profiles(bundle.graph("stylizer"), [256], 4, 16, opt_batch=8)


def test_the_smallest_profile_that_fits_is_picked(bundle):
    built = profiles(bundle.graph("style_encoder"), [256, 512, 1024], 8, 16)
    assert pick_profile(built, {"style": (1, 3, 200, 256)}) == 0
    assert pick_profile(built, {"style": (2, 3, 256, 264)}) == 1
    assert pick_profile(built, {"style": (1, 3, 256, 1024)}) == 2  # non-square still fits
    with pytest.raises(ModelError, match="larger --shapes"):
        pick_profile(built, {"style": (1, 3, 2048, 2048)})
    with pytest.raises(ModelError, match="fit none"):
        pick_profile(built, {"style": (9, 3, 256, 256)})


def test_profiles_per_timed_batch_and_the_nearest_one_is_picked(bundle):
    built = profiles(bundle.graph("stylizer"), [256, 512], 16, 16, opt_batch=(16, 1))
    opts = [(p["content"]["opt"][0], p["content"]["opt"][2]) for p in built]
    assert opts == [(1, 256), (16, 256), (1, 512), (16, 512)]
    assert all(p["content"]["max"][0] == 16 for p in built)

    def shapes(batch: int, side: int) -> dict:
        return {
            "content": (batch, 3, side, side),
            "style_mu": (batch, 64),
            "style_sigma": (batch, 64),
            "style_matrix": (batch, 32, 32),
            "alpha": (batch,),
        }

    assert set(shapes(1, 8)) == {t.name for t in bundle.graph("stylizer").inputs}
    assert pick_profile(built, shapes(16, 512)) == 3  # tuned at batch 16, not batch 1
    assert pick_profile(built, shapes(1, 512)) == 2
    assert pick_profile(built, shapes(12, 200)) == 1  # the smallest size first, then nearest
    assert pick_profile(built, shapes(2, 256)) == 0


# -- engine records ----------------------------------------------------------------
def _record(
    bundle: Bundle, trt_version="10.13.0", tag="sm90", onnx_sha=None, weights_sha="current"
) -> Path:
    directory = engine_dir(bundle, tag, trt_version)
    directory.mkdir(parents=True)
    entry = {
        "onnx": "stylizer.onnx",
        "onnx_sha256": onnx_sha or bundle.manifest["files"]["stylizer.onnx"],
        "weights_sha256": bundle.manifest["files"].get("weights.bin")
        if weights_sha == "current"
        else weights_sha,
        "profiles": [],
    }
    (directory / "build.json").write_text(
        json.dumps(
            {
                "format": "styleship-engines",
                "format_version": 1,
                "tensorrt": trt_version,
                "gpu": {"tag": tag},
                "engines": {"stylizer.fp16.plan": entry},
            }
        )
    )
    (directory / "stylizer.fp16.plan").write_bytes(b"\0")
    return directory


def test_engine_checks_name_the_rebuild_command(bundle):
    with pytest.raises(ModelError, match=r"no TensorRT engines for sm90.*styleship build"):
        check_engine(bundle, "stylizer", "fp16", "sm90", "10.13.0")
    _record(bundle, "10.13.0", "sm80")
    with pytest.raises(ModelError, match=r"found engines for sm80-trt10.13.0.*--precision fp16"):
        check_engine(bundle, "stylizer", "fp16", "sm90", "10.13.0")
    directory = _record(bundle, "10.13.0", "sm90")
    path, entry = check_engine(bundle, "stylizer", "fp16", "sm90", "10.13.0")
    assert path == directory / "stylizer.fp16.plan" and entry["onnx"] == "stylizer.onnx"
    with pytest.raises(ModelError, match="no fp32 engine"):
        check_engine(bundle, "stylizer", "fp32", "sm90", "10.13.0")
    shutil.rmtree(directory)
    _record(bundle, "10.13.0", "sm90", onnx_sha="0" * 64)
    with pytest.raises(ModelError, match="different stylizer.onnx"):
        check_engine(bundle, "stylizer", "fp16", "sm90", "10.13.0")
    shutil.rmtree(directory)
    _record(bundle, "10.13.0", "sm90", weights_sha="0" * 64)
    with pytest.raises(ModelError, match="different weights than the bundle's weights.bin"):
        check_engine(bundle, "stylizer", "fp16", "sm90", "10.13.0")


def test_engines_of_another_gpu_model_with_the_same_capability_are_refused(bundle):
    assert GpuIdentity("NVIDIA H100 80GB HBM3", 9, 0).tag == "sm90-nvidia-h100-80gb-hbm3"
    _record(bundle, "10.13.3.9", "sm90-nvidia-h100-80gb-hbm3")
    with pytest.raises(ModelError, match=r"no TensorRT engines for sm90-nvidia-h200.*found"):
        check_engine(bundle, "stylizer", "fp16", "sm90-nvidia-h200", "10.13.3.9")


# -- build_engines against a stand-in tensorrt module ------------------------------------
class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []


def _fake_tensorrt(version: str, rec: _Recorder, parse_ok=True, build_ok=True, cache_ok=True):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        WARNING = 2

        def __init__(self, level):
            rec.calls.append(("Logger", level))

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 5

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"

    class BuilderFlag:
        FP16 = "FP16"
        TF32 = "TF32"

    class Error:
        def desc(self):
            return "Unsupported ONNX op: Frobnicate"

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            rec.calls.append(("parse", Path(path).name))
            return parse_ok

        def get_error(self, i):
            return Error()

    class Cache:
        def __init__(self, data=b""):
            self.data = data

        def serialize(self):
            return b"timing-cache"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            rec.calls.append(("workspace", pool, size))

        def set_flag(self, flag):
            rec.calls.append(("set_flag", flag))

        def clear_flag(self, flag):
            rec.calls.append(("clear_flag", flag))

        def create_timing_cache(self, data):
            rec.calls.append(("timing_cache_in", data))
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            # Documented: returns False when the cache is refused (another TensorRT/GPU).
            ok = cache_ok or cache.data == b""
            rec.calls.append(("set_timing_cache", cache.data, ignore_mismatch, ok))
            return ok

        def get_timing_cache(self):
            return Cache()

        def add_optimization_profile(self, profile):
            rec.calls.append(("profile", profile.shapes))

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger):
            rec.calls.append(("Builder",))

        def create_network(self, flags):
            rec.calls.append(("network", flags))
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            rec.calls.append(("build",))
            return b"stand-in bytes, not an engine" if build_ok else None

    for cls in (Logger, NetworkDefinitionCreationFlag, MemoryPoolType, BuilderFlag, OnnxParser):
        setattr(trt, cls.__name__, cls)
    trt.Builder = Builder
    return trt


@pytest.fixture
def fake_trt(monkeypatch):
    def install(version="10.13.0", **kw):
        rec = _Recorder()
        monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(version, rec, **kw))
        monkeypatch.setattr("styleship.export.tensorrt.gpu_identity", lambda device=0: GPU)
        monkeypatch.setattr(
            "styleship.export.tensorrt.set_device", lambda i: rec.calls.append(("set_device", i))
        )
        return rec

    return install


def _build(bundle, **kw):
    from styleship.export.tensorrt import build_engines

    return build_engines(bundle.path, sizes=(256, 512), max_batch=4, graphs=("stylizer",), **kw)


def _with_fp16_graph(bundle: Bundle) -> Bundle:
    """The manifest names an fp16 stylizer graph (the fp32 file stands in for it)."""
    manifest = bundle.manifest
    manifest["graphs"]["stylizer"]["files"]["fp16"] = "stylizer.onnx"
    (bundle.path / "manifest.json").write_text(json.dumps(manifest))
    return Bundle.load(bundle.path)


def test_fp16_builds_the_fp16_graph_strongly_typed_on_the_chosen_gpu(bundle, fake_trt):
    bundle = _with_fp16_graph(bundle)
    rec = fake_trt("10.13.3.9")  # trt.__version__ has four parts
    directory = _build(bundle, precision="fp16", device=1)
    # The device is made current before TensorRT's builder exists (it builds there).
    assert rec.calls.index(("set_device", 1)) < rec.calls.index(("Builder",))
    assert ("network", 1 << 5) in rec.calls  # STRONGLY_TYPED on TensorRT 10
    assert not [c for c in rec.calls if c[0] in ("set_flag", "clear_flag")]  # no FP16 flag
    order = [c[0] for c in rec.calls if c[0] in ("parse", "workspace", "profile", "build")]
    assert order == ["parse", "workspace", "profile", "profile", "build"]
    profiles_seen = [c[1] for c in rec.calls if c[0] == "profile"]
    assert profiles_seen[1]["content"] == ((1, 3, 16, 16), (1, 3, 512, 512), (4, 3, 512, 512))
    # Engines and their timing cache are keyed by the GPU model, not only its capability.
    assert directory.name == "sm90-stand-in-gpu-trt10.13.3.9"
    record = json.loads((directory / "build.json").read_text())
    entry = record["engines"]["stylizer.fp16.plan"]
    assert entry["onnx_sha256"] == bundle.manifest["files"]["stylizer.onnx"]
    assert entry["weights_sha256"] == bundle.manifest["files"]["weights.bin"]
    assert entry["strongly_typed"] is True and entry["timing_cache"] == "new"
    assert record["gpu"] == {
        "name": "Stand-in GPU",
        "tag": "sm90-stand-in-gpu",
        "compute_capability": "9.0",
    }
    assert (directory / "timing.cache").read_bytes() == b"timing-cache"
    # The engine is found by the runtime's checks, and a second build is a no-op.
    path, _ = check_engine(bundle, "stylizer", "fp16", GPU.tag, "10.13.3.9")
    assert path.is_file()
    rec.calls.clear()
    _build(bundle, precision="fp16")
    assert ("build",) not in rec.calls
    _build(bundle, precision="fp16", force=True)
    assert ("build",) in rec.calls
    assert ("set_timing_cache", b"timing-cache", False, True) in rec.calls  # reused


def test_a_refused_timing_cache_is_replaced_and_recorded(bundle, fake_trt):
    rec = fake_trt("10.13.3.9", cache_ok=False)
    logs: list[str] = []
    directory = engine_dir(bundle, GPU.tag, "10.13.3.9")
    directory.mkdir(parents=True)
    (directory / "timing.cache").write_bytes(b"from another GPU")
    _build(bundle, precision="fp32", log=logs.append)
    refused = [c for c in rec.calls if c[0] == "set_timing_cache"]
    assert refused == [
        ("set_timing_cache", b"from another GPU", False, False),
        ("set_timing_cache", b"", False, True),  # a fresh cache, set before building
    ]
    assert any("refused this timing cache" in m for m in logs)
    record = json.loads((directory / "build.json").read_text())
    assert record["engines"]["stylizer.fp32.plan"]["timing_cache"] == "refused"
    assert (directory / "timing.cache").read_bytes() == b"timing-cache"


def test_fp32_clears_tf32_and_tf32_keeps_it(bundle, fake_trt):
    rec = fake_trt("10.13.3.9")
    _build(bundle, precision="fp32")
    assert ("clear_flag", "TF32") in rec.calls and ("set_flag", "FP16") not in rec.calls
    assert ("network", 0) in rec.calls  # fp32: weakly typed is fine, nothing to obey
    rec = fake_trt("10.13.3.9")
    _build(bundle, precision="tf32")
    assert not [c for c in rec.calls if c[0] in ("clear_flag", "set_flag")]


def test_fp16_never_comes_from_the_fp32_graph(bundle, fake_trt):
    """TensorRT 10's FP16 flag on the fp32 graph would let weak typing run the variance and
    covariance sums in fp16 (they overflow at 512-1024 px): fp16 needs the fp16 graph."""
    for version in ("10.13.3.9", "11.4.0.2"):
        rec = fake_trt(version)
        with pytest.raises(ExportError, match="fp16 engines are built from the bundle's fp16"):
            _build(bundle, precision="fp16")
        assert ("build",) not in rec.calls and ("set_flag", "FP16") not in rec.calls
    bundle = _with_fp16_graph(bundle)
    for version, flags in (("10.13.3.9", 1 << 5), ("11.4.0.2", 0)):
        rec = fake_trt(version)
        _build(bundle, precision="fp16", force=True)
        assert ("network", flags) in rec.calls and ("set_flag", "FP16") not in rec.calls


def test_build_errors(bundle, fake_trt):
    fake_trt("11.4.0.2")
    with pytest.raises(ExportError, match="has none: run `styleship export CHECKPOINT"):
        _build(bundle, precision="fp16")
    fake_trt("8.6.1")
    with pytest.raises(BackendUnavailable, match="TensorRT 8.6.1 is too old"):
        _build(bundle, precision="fp32")
    fake_trt("10.13.3.9", parse_ok=False)
    with pytest.raises(ModelError, match="Unsupported ONNX op: Frobnicate"):
        _build(bundle, precision="fp32")
    fake_trt("10.13.3.9", build_ok=False)
    with pytest.raises(ExportError, match="could not build stylizer"):
        _build(bundle, precision="fp32")
    assert not list((bundle.path / "engines").rglob("*.plan"))  # nothing half-written


def test_a_suite_builds_each_engine_once_for_all_its_blocks(bundle, fake_trt):
    """Two blocks (256-512 at batches 1 and 8; 512 alone at batch 16) make one stylizer
    engine with a profile per size and batch; the style encoder is built for the Stylizer's
    512² style, batch 1, and only because a block times end to end (was: rebuilt by the
    second block's 512-only profiles, and every engine tuned at batch 1)."""
    from styleship.bench.config import parse_suite
    from styleship.bench.models import build_suite_engines

    text = f"""
name = "t"
device = "cuda"
content = "{ROOT}/assets/content/chelsea.jpg"
style = "{ROOT}/assets/styles/starry_night.jpg"
[[model]]
id = "m"
bundle = "{bundle.path}"
[[run]]
models = ["m"]
backends = ["tensorrt"]
sizes = [256, 512]
batches = [1, 8]
end_to_end = true
[[run]]
models = ["m"]
backends = ["tensorrt-graph"]
sizes = [512]
batches = [16]
"""
    suite = parse_suite(text, ROOT / "benchmarks" / "t.toml")
    rec = fake_trt("10.13.3.9")
    build_suite_engines(suite, "m", "fp32", bundle, log=lambda m: None)
    parsed = [c[1] for c in rec.calls if c[0] == "parse"]
    assert parsed == ["stylizer.onnx", "style_encoder.onnx"]
    built = [c[1] for c in rec.calls if c[0] == "profile"]
    stylizer, encoder = built[:6], built[6:]
    assert [(p["content"][1][0], p["content"][1][2]) for p in stylizer] == [
        (b, s) for s in (256, 512) for b in (1, 8, 16)
    ]
    assert {p["content"][2][0] for p in stylizer} == {16}
    assert encoder == [{"style": ((1, 3, 16, 16), (1, 3, 512, 512), (1, 3, 512, 512))}]
    rec.calls.clear()
    build_suite_engines(suite, "m", "fp32", bundle, log=lambda m: None)
    assert ("build",) not in rec.calls  # both engines are current: nothing is rebuilt


# -- the parts that need TensorRT itself -------------------------------------------------
@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_without_tensorrt_the_backend_says_so(bundle):
    for name in ("tensorrt", "tensorrt-graph"):  # the CUDA-graph variant is a registry row
        assert "TensorRT is not installed" in available_backends()[name]
        with pytest.raises(BackendUnavailable, match="TensorRT"):
            create_backend(name)


@pytest.fixture
def fp16_bundle(small_checkpoint, tmp_path) -> Bundle:
    """A bundle with fp16 graphs: what fp16 engines are built from."""
    from styleship.export.onnx import export_bundle

    return Bundle.load(export_bundle(small_checkpoint, tmp_path / "half.stvae", fp16=True))


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TRT, reason="needs TensorRT (libnvinfer) and an NVIDIA GPU")
def test_tensorrt_engine_matches_onnxruntime(fp16_bundle, contents, styles):
    from styleship.compare import psnr
    from styleship.export.tensorrt import build_engines
    from styleship.runtime.stylizer import Stylizer

    bundle = fp16_bundle
    assert "fp16" in bundle.graph("stylizer").files  # fp16 engines need the fp16 graph
    for precision, min_psnr in (("fp32", 50.0), ("fp16", 35.0)):
        build_engines(bundle.path, precision, sizes=(256,), max_batch=2)
        # Styles are encoded at `style_size`: 256, what the engines' profiles take (the
        # default 512 is refused when the Stylizer opens: tests/test_tensorrt_runtime.py).
        with (
            Stylizer(
                bundle, "tensorrt", precision=precision, style_size=256, cache_dir=None
            ) as trt_st,
            Stylizer(bundle, "ort-cpu", precision="fp32", style_size=256, cache_dir=None) as ref_st,
        ):
            out = trt_st.stylize(contents[0], styles[0], max_size=256).rgb
            ref = ref_st.stylize(contents[0], styles[0], max_size=256).rgb
        assert psnr(ref, out) >= min_psnr
        assert np.isfinite(out).all()
