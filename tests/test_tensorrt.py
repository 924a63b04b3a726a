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


# -- engine records ----------------------------------------------------------------
def _record(bundle: Bundle, trt_version="10.13.0", tag="sm90", onnx_sha=None) -> Path:
    directory = engine_dir(bundle, tag, trt_version)
    directory.mkdir(parents=True)
    entry = {
        "onnx": "stylizer.onnx",
        "onnx_sha256": onnx_sha or bundle.manifest["files"]["stylizer.onnx"],
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


# -- build_engines against a stand-in tensorrt module ------------------------------------
class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []


def _fake_tensorrt(version: str, rec: _Recorder, parse_ok=True, build_ok=True):
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
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            pass

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
            pass

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
        return rec

    return install


def _build(bundle, **kw):
    from styleship.export.tensorrt import build_engines

    return build_engines(bundle.path, sizes=(256, 512), max_batch=4, graphs=("stylizer",), **kw)


def test_trt10_fp16_without_an_fp16_graph_uses_the_builder_flag(bundle, fake_trt):
    rec = fake_trt("10.13.0")
    directory = _build(bundle, precision="fp16")
    assert ("network", 0) in rec.calls and ("set_flag", "FP16") in rec.calls
    assert ("clear_flag", "TF32") not in rec.calls
    order = [c[0] for c in rec.calls if c[0] in ("parse", "workspace", "profile", "build")]
    assert order == ["parse", "workspace", "profile", "profile", "build"]
    profiles_seen = [c[1] for c in rec.calls if c[0] == "profile"]
    assert profiles_seen[1]["content"] == ((1, 3, 16, 16), (1, 3, 512, 512), (4, 3, 512, 512))
    assert directory.name == "sm90-trt10.13.0"
    record = json.loads((directory / "build.json").read_text())
    entry = record["engines"]["stylizer.fp16.plan"]
    assert entry["onnx_sha256"] == bundle.manifest["files"]["stylizer.onnx"]
    assert entry["strongly_typed"] is False and record["gpu"]["tag"] == "sm90"
    assert (directory / "timing.cache").read_bytes() == b"timing-cache"
    # The engine is found by the runtime's checks, and a second build is a no-op.
    path, _ = check_engine(bundle, "stylizer", "fp16", "sm90", "10.13.0")
    assert path.is_file()
    rec.calls.clear()
    _build(bundle, precision="fp16")
    assert ("build",) not in rec.calls
    _build(bundle, precision="fp16", force=True)
    assert ("build",) in rec.calls
    assert ("timing_cache_in", b"timing-cache") in rec.calls  # the cache file is reused


def test_fp32_clears_tf32_and_tf32_keeps_it(bundle, fake_trt):
    rec = fake_trt("10.13.0")
    _build(bundle, precision="fp32")
    assert ("clear_flag", "TF32") in rec.calls and ("set_flag", "FP16") not in rec.calls
    rec = fake_trt("10.13.0")
    _build(bundle, precision="tf32")
    assert not [c for c in rec.calls if c[0] in ("clear_flag", "set_flag")]


def test_strongly_typed_fp16_graph_on_trt10_and_trt11(bundle, fake_trt):
    manifest = bundle.manifest
    manifest["graphs"]["stylizer"]["files"]["fp16"] = "stylizer.onnx"  # stand-in fp16 file
    (bundle.path / "manifest.json").write_text(json.dumps(manifest))
    for version, flags in (("10.13.0", 1 << 5), ("11.4.0", 0)):
        rec = fake_trt(version)
        _build(bundle, precision="fp16")
        assert ("network", flags) in rec.calls
        assert ("set_flag", "FP16") not in rec.calls


def test_build_errors(bundle, fake_trt):
    fake_trt("11.4.0")
    with pytest.raises(ExportError, match="TensorRT 11 takes precision from the ONNX types"):
        _build(bundle, precision="fp16")
    fake_trt("8.6.1")
    with pytest.raises(BackendUnavailable, match="TensorRT 8.6.1 is too old"):
        _build(bundle, precision="fp32")
    fake_trt("10.13.0", parse_ok=False)
    with pytest.raises(ModelError, match="Unsupported ONNX op: Frobnicate"):
        _build(bundle, precision="fp32")
    fake_trt("10.13.0", build_ok=False)
    with pytest.raises(ExportError, match="could not build stylizer"):
        _build(bundle, precision="fp32")
    assert not list((bundle.path / "engines").rglob("*.plan"))  # nothing half-written


# -- the parts that need TensorRT itself -------------------------------------------------
@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_without_tensorrt_the_backend_says_so(bundle):
    assert "TensorRT is not installed" in available_backends()["tensorrt"]
    with pytest.raises(BackendUnavailable, match="TensorRT"):
        create_backend("tensorrt")


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TRT, reason="needs TensorRT (libnvinfer) and an NVIDIA GPU")
def test_tensorrt_engine_matches_onnxruntime(bundle, contents, styles):
    from styleship.compare import psnr
    from styleship.export.tensorrt import build_engines
    from styleship.runtime.stylizer import Stylizer

    for precision, min_psnr in (("fp32", 50.0), ("fp16", 35.0)):
        build_engines(bundle.path, precision, sizes=(256,), max_batch=2)
        with (
            Stylizer(bundle, "tensorrt", precision=precision, cache_dir=None) as trt_st,
            Stylizer(bundle, "ort-cpu", cache_dir=None) as ref_st,
        ):
            out = trt_st.stylize(contents[0], styles[0], max_size=256).rgb
            ref = ref_st.stylize(contents[0], styles[0], max_size=256).rgb
        assert psnr(ref, out) >= min_psnr
        assert np.isfinite(out).all()
