"""Bundle verification and the ONNX Runtime backend (no torch needed)."""

import json

import numpy as np
import pytest

from styleship.errors import BackendUnavailable, InputError, ModelError
from styleship.runtime.backends import available_backends, create_backend
from styleship.runtime.bundle import Bundle


def _rehash(bundle, name):
    from styleship._hashing import sha256_file

    m = json.loads((bundle / "manifest.json").read_text())
    m["files"][name] = sha256_file(bundle / name)
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_changed_file_fails_hash_check(bundle_copy):
    with (bundle_copy / "stylizer.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="stylizer.onnx does not match its sha256"):
        Bundle.load(bundle_copy)


def test_newer_format_version_is_refused(bundle_copy):
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["format_version"] = 99
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="newer than this styleship reads"):
        Bundle.load(bundle_copy)


def test_missing_or_broken_manifest(bundle_copy, tmp_path):
    with pytest.raises(InputError, match="not a model bundle directory"):
        Bundle.load(tmp_path / "nope")
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        Bundle.load(bundle_copy)
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(ModelError, match="no manifest.json"):
        Bundle.load(bundle_copy)


def test_corrupt_onnx_is_a_model_error(bundle_copy):
    (bundle_copy / "stylizer.onnx").write_bytes(b"this is not protobuf" * 10)
    _rehash(bundle_copy, "stylizer.onnx")
    backend = create_backend("ort-cpu")
    with pytest.raises(ModelError, match="ONNX Runtime cannot load it"):
        backend.load(Bundle.load(bundle_copy), "stylizer")


def test_foreign_onnx_is_a_model_error(bundle_copy):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "foreign", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(bundle_copy / "stylizer.onnx"))
    _rehash(bundle_copy, "stylizer.onnx")
    with pytest.raises(ModelError, match="not this bundle's"):
        create_backend("ort-cpu").load(Bundle.load(bundle_copy), "stylizer")


def test_backend_checks_inputs(small_bundle):
    bundle = Bundle.load(small_bundle)
    with create_backend("ort-cpu") as backend:
        with pytest.raises(ModelError, match="before load"):
            backend.run({})
        backend.load(bundle, "style_encoder")
        style = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
        out = backend.run({"style": style})
        assert set(out) == {"style_mu", "style_sigma", "style_matrix"}
        assert out["style_matrix"].shape == (1, 32, 32)
        with pytest.raises(InputError, match="do not match"):
            backend.run({"content": style})
        with pytest.raises(InputError, match="float64"):
            backend.run({"style": style.astype(np.float64)})
        with pytest.raises(InputError, match="shape"):
            backend.run({"style": style[0]})
        assert backend.info().details["providers"] == ["CPUExecutionProvider"]


def test_unknown_and_unavailable_backends():
    with pytest.raises(InputError, match="did you mean 'ort-cpu'"):
        create_backend("ort-cpuu")
    status = available_backends()
    assert status["ort-cpu"] is None
    if status["ort-cuda"] is not None:  # the usual case on a CPU machine
        with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider"):
            create_backend("ort-cuda")
