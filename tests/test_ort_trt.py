"""ONNX Runtime's TensorRT provider: the session it is asked for, against a recording stand-in.

onnxruntime-gpu cannot run here; the stand-in records the file and provider
options `InferenceSession` receives (ORT-docs TensorRT-ExecutionProvider:
`trt_profile_min/opt/max_shapes`, `trt_fp16_enable`, engine and timing caches).
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from styleship.errors import BackendUnavailable
from styleship.runtime.backends import create_backend
from styleship.runtime.bundle import Bundle
from styleship.runtime.engines import BUILD_MAX_BATCH, BUILD_SIZES, profiles


def _fake_onnxruntime(sessions: list) -> types.ModuleType:
    ort = types.ModuleType("onnxruntime")
    ort.__spec__ = importlib.machinery.ModuleSpec("onnxruntime", None)
    ort.__version__ = "1.31.0"
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    ort.get_available_providers = lambda: providers
    ort.SessionOptions = SimpleNamespace
    ort.GraphOptimizationLevel = SimpleNamespace(ORT_ENABLE_ALL="all")

    class InferenceSession:
        def __init__(self, path, options, providers):
            import onnx

            graph = onnx.load(path).graph
            self.path, self.chain = Path(path), providers
            self.inputs = [SimpleNamespace(name=i.name) for i in graph.input]
            self.outputs = [SimpleNamespace(name=o.name) for o in graph.output]
            sessions.append(self)

        def get_providers(self):
            return [p[0] if isinstance(p, tuple) else p for p in self.chain]

        def get_inputs(self):
            return self.inputs

        def get_outputs(self):
            return self.outputs

    ort.InferenceSession = InferenceSession
    return ort


@pytest.fixture
def ort_sessions(monkeypatch, tmp_path) -> list:
    pytest.importorskip("onnx")
    sessions: list = []
    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_onnxruntime(sessions))
    monkeypatch.setenv("STYLESHIP_CACHE", str(tmp_path / "cache" / "styles"))
    return sessions


def _with_fp16_graph(path) -> Bundle:
    bundle = Bundle.load(path)
    manifest = bundle.manifest
    (bundle.path / "stylizer.fp16.onnx").write_bytes((bundle.path / "stylizer.onnx").read_bytes())
    manifest["graphs"]["stylizer"]["files"]["fp16"] = "stylizer.fp16.onnx"
    manifest["files"]["stylizer.fp16.onnx"] = manifest["files"]["stylizer.onnx"]
    (bundle.path / "manifest.json").write_text(json.dumps(manifest))
    return Bundle.load(bundle.path)


def test_ort_trt_gets_builds_profiles_and_refuses_fp16(bundle_copy, ort_sessions, tmp_path):
    bundle = _with_fp16_graph(bundle_copy)
    with create_backend("ort-trt") as backend:
        backend.load(bundle, "stylizer", "cuda:0", "fp32")
        details = backend.info().details
    session = ort_sessions[-1]
    name, options = session.chain[0]
    assert name == "TensorrtExecutionProvider" and session.path.name == "stylizer.onnx"
    assert options["trt_fp16_enable"] is False
    assert "no option to turn TF32 off" in details["tf32"]  # fp32 here means TF32
    # fp16: weakly typed, the provider could neither keep the fp32 islands nor say which
    # layers ran fp16, so no session is opened and the row says why in one line.
    with pytest.raises(BackendUnavailable, match=r"^ort-trt runs fp32 only: .*strongly typed$"):
        create_backend("ort-trt").load(bundle, "stylizer", "cuda:0", "fp16")
    assert len(ort_sessions) == 1
    # The same nested profiles `styleship build` makes: every input, profiles in order.
    built = profiles(bundle.graph("stylizer"), list(BUILD_SIZES), BUILD_MAX_BATCH, 16)
    assert len(built) == 3
    for which in ("min", "opt", "max"):
        entries = options[f"trt_profile_{which}_shapes"].split(",")
        assert len(entries) == 3 * len(bundle.graph("stylizer").inputs)
        content = [e.split(":")[1] for e in entries if e.startswith("content:")]
        assert content == ["x".join(map(str, p["content"][which])) for p in built]
    assert options["trt_profile_max_shapes"].startswith("content:16x3x256x256,")
    assert "alpha:16" in options["trt_profile_max_shapes"].split(",")
    # Engine and timing caches sit in a directory keyed by bundle, graph, ORT, TensorRT, GPU.
    cache = Path(options["trt_engine_cache_path"])
    assert cache == Path(options["trt_timing_cache_path"]) and cache.is_dir()
    assert cache.parent == tmp_path / "cache" / "ort-trt"
    assert cache.name.startswith(f"{bundle.hash[:16]}-stylizer-ort1.31.0-trt")


def test_ort_trt_profiles_follow_the_sizes_asked_for(bundle_copy, ort_sessions):
    backend = create_backend("ort-trt", trt_sizes=(128, 256), trt_max_batch=4)
    backend.load(Bundle.load(bundle_copy), "stylizer", "cuda:0", "fp32")
    options = ort_sessions[-1].chain[0][1]
    maxima = [e for e in options["trt_profile_max_shapes"].split(",") if e.startswith("content")]
    assert maxima == ["content:4x3x128x128", "content:4x3x256x256"]
    assert "trt_sizes" not in options and "trt_max_batch" not in options
    backend.close()
