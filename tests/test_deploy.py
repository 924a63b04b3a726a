"""fp16 graphs with fp32 islands, and the Triton model repository."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

from styleship.compare import psnr
from styleship.errors import InputError
from styleship.runtime.backends import create_backend
from styleship.runtime.bundle import Bundle

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def fp16_bundle(small_checkpoint, tmp_path_factory) -> Bundle:
    from styleship.export.onnx import export_bundle

    out = tmp_path_factory.mktemp("fp16") / "half.stvae"
    return Bundle.load(export_bundle(small_checkpoint, out, fp16=True))


def _fp16_types(path) -> dict[str, int]:
    model = onnx.load(str(path))
    return {t.name: t.data_type for t in model.graph.initializer}


def test_fp16_graphs_keep_the_listed_nodes_in_fp32(fp16_bundle):
    from styleship.export.fp16 import fp32_nodes

    manifest = fp16_bundle.manifest
    for graph in ("style_encoder", "stylizer", "fused"):
        name = f"{graph}.fp16.onnx"
        assert fp16_bundle.graph(graph).files["fp16"] == name
        assert name in manifest["files"]  # hashed and verified like the fp32 files
        model = onnx.load(str(fp16_bundle.path / name))
        f16 = onnx.TensorProto.FLOAT16
        # Graph I/O stays fp32; convolution weights are fp16.
        io = [*model.graph.input, *model.graph.output]
        assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in io)
        kept = set(manifest["fp16"]["graphs"][graph]["fp32_nodes"])
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        half_convs = [n for n in convs if n.name not in kept]
        assert half_convs, "the convolutions should be fp16"
        types = _fp16_types(fp16_bundle.path / name)
        assert any(types.get(i) == f16 for n in half_convs for i in n.input)
        fp32_model = onnx.load(str(fp16_bundle.graph_file(graph)))
        assert set(fp32_nodes(fp32_model)) == kept
        ops = {n.op_type for n in fp32_model.graph.node if n.name in kept}
        for op in {"ReduceMean", "Sqrt"} & {n.op_type for n in fp32_model.graph.node}:
            assert op in ops
    stylizer = onnx.load(str(fp16_bundle.graph_file("stylizer")))
    transform = [
        n.name
        for n in stylizer.graph.node
        if any("transform" in p.value for p in n.metadata_props if "name_scopes" in p.key)
    ]
    assert transform and set(transform) <= set(manifest["fp16"]["graphs"]["stylizer"]["fp32_nodes"])


def test_fp16_parity_is_recorded_and_holds(fp16_bundle, contents, styles):
    record = fp16_bundle.manifest["precision_parity"]["fp16"]
    assert record["backend"] == "ort-cpu" and record["default"] is False
    assert all(r["psnr_db"] >= 40.0 for r in record["results"]) == record["passed"]
    feeds = {
        "content": np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32),
        "style": np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32),
        "alpha": np.ones(1, np.float32),
    }
    outs = {}
    for precision in ("fp32", "fp16"):
        with create_backend("ort-cpu") as backend:
            backend.load(fp16_bundle, "fused", "cpu", precision)
            outs[precision] = backend.run(feeds)["image"]
    assert np.isfinite(outs["fp16"]).all()
    assert 30.0 <= psnr(outs["fp32"], outs["fp16"]) < float("inf")


def test_vq_lookup_stays_fp32(vq_bundle):
    from styleship.export.fp16 import fp32_nodes

    model = onnx.load(str(vq_bundle / "fused.onnx"))
    kept = set(fp32_nodes(model))
    by_op = {}
    for n in model.graph.node:
        by_op.setdefault(n.op_type, []).append(n.name in kept)
    for op in ("ArgMax", "Gather", "MatMul", "ReduceL2"):
        assert all(by_op[op]), op
    assert not all(by_op["Conv"])


def test_export_precision_is_checked(small_checkpoint, tmp_path):
    r = run_cli("export", small_checkpoint, "-o", tmp_path / "x.stvae", "--precision", "fp8")
    assert r.returncode == 1 and "fp32, fp16, int8" in r.stderr


# -- Triton ----------------------------------------------------------------------------
def _parse(path):
    text_format = pytest.importorskip("google.protobuf.text_format")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_triton_repository_parses_with_tritons_own_schema(small_bundle, tmp_path):
    repo = tmp_path / "repo"
    r = run_cli(
        "export-triton",
        small_bundle,
        "-o",
        repo,
        "--kind",
        "KIND_CPU",
        "--max-batch",
        "8",
        "--warmup",
        "256,512",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    bundle = Bundle.load(small_bundle)
    style = _parse(repo / "small_style" / "config.pbtxt")
    main = _parse(repo / "small" / "config.pbtxt")
    pipe = _parse(repo / "small_pipeline" / "config.pbtxt")
    assert main.platform == "onnxruntime_onnx" and main.max_batch_size == 8
    dims = {t.name: list(t.dims) for t in main.input}
    assert dims["content"] == [3, -1, -1] and dims["style_matrix"] == [32, 32]
    assert dims["alpha"] == [1] and list(main.input[-1].reshape.shape) == []
    assert list(main.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert main.instance_group[0].kind == main.instance_group[0].KIND_CPU
    assert [w.name for w in main.model_warmup] == ["warmup_256", "warmup_512"]
    assert list(main.model_warmup[0].inputs["content"].dims) == [3, 256, 256]
    assert list(main.model_warmup[0].inputs["style_mu"].dims) == [64]
    assert [o.name for o in style.output] == ["style_mu", "style_sigma", "style_matrix"]
    steps = pipe.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["small_style", "small"]
    assert dict(steps[1].input_map)["style_mu"] == "style_mu"
    assert {t.name for t in pipe.input} == {"style", "content", "alpha"}
    import onnxruntime as ort

    for graph, name in (("style_encoder", "small_style"), ("stylizer", "small")):
        copied = (repo / name / "1" / "model.onnx").read_bytes()
        assert copied == bundle.graph_file(graph).read_bytes()
        # The graph reads its tensors from the bundle's weights file, copied beside it: the
        # model loads from the repository alone, as Triton's ONNX Runtime backend loads it.
        weights = repo / name / "1" / "weights.bin"
        assert weights.read_bytes() == (small_bundle / "weights.bin").read_bytes()
        session = ort.InferenceSession(
            str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        names = [t.name for t in bundle.graph(graph).inputs]
        assert [i.name for i in session.get_inputs()] == names
    again = run_cli("export-triton", small_bundle, "-o", repo)
    assert again.returncode == 1 and "--force" in again.stderr
    assert run_cli("export-triton", small_bundle, "-o", repo, "--force").returncode == 0


def test_triton_plan_needs_engines(small_bundle, tmp_path):
    from styleship.export.triton import export_triton

    with pytest.raises(InputError, match="--engines"):
        export_triton(small_bundle, tmp_path / "r", platform="tensorrt_plan")
    with pytest.raises(InputError, match="GPU instances"):
        export_triton(small_bundle, tmp_path / "r", platform="tensorrt_plan", kind="KIND_CPU")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def _fake_engines(bundle_path, sizes=(256, 512, 1024), max_batch=4):
    """An engines directory as `styleship build` leaves it: plans (stand-in bytes) and a
    build.json whose profiles come from the same function the builder uses."""
    import json

    from styleship.runtime.engines import engine_dir, engine_name, profiles

    bundle = Bundle.load(bundle_path)
    directory = engine_dir(bundle, "sm90-stand-in-gpu", "10.13.3.9")
    directory.mkdir(parents=True)
    engines = {}
    for graph in ("style_encoder", "stylizer"):
        name = engine_name(graph, "fp16")
        (directory / name).write_bytes(b"stand-in plan")
        engines[name] = {
            "onnx": f"{graph}.onnx",
            "onnx_sha256": bundle.manifest["files"][f"{graph}.onnx"],
            "profiles": profiles(bundle.graph(graph), list(sizes), max_batch, 16),
        }
    record = {"format": "styleship-engines", "format_version": 1, "engines": engines}
    (directory / "build.json").write_text(json.dumps(record))
    return directory


def test_triton_plans_list_every_profile_of_build_json(bundle_copy, tmp_path):
    from styleship.export.triton import export_triton

    engines = _fake_engines(bundle_copy, sizes=(256, 512, 1024), max_batch=4)
    repo = tmp_path / "repo"
    export_triton(
        bundle_copy, repo, "tensorrt_plan", max_batch=4, warmup_sizes=(512,), precision="fp16"
    )
    for model in ("small", "small_style"):
        config = _parse(repo / model / "config.pbtxt")
        assert config.platform == "tensorrt_plan" and config.max_batch_size == 4
        # Profile 0 stops at 256 px: without the list, Triton would use it alone and
        # the 512 warm-up would fail.
        assert [list(g.profile) for g in config.instance_group] == [["0", "1", "2"]]
        plan = (repo / model / "1" / "model.plan").read_bytes()
        graph = "stylizer" if model == "small" else "style_encoder"
        assert plan == (engines / f"{graph}.fp16.plan").read_bytes()
    pipe = _parse(repo / "small_pipeline" / "config.pbtxt")
    alpha = next(t for t in pipe.input if t.name == "alpha")
    assert list(alpha.dims) == [1] and not alpha.HasField("reshape")  # reshape: models only


def test_triton_plans_refuse_a_batch_or_warm_up_the_engines_cannot_take(bundle_copy, tmp_path):
    _fake_engines(bundle_copy, sizes=(256, 512), max_batch=4)
    repo = tmp_path / "repo"
    args = ("export-triton", bundle_copy, "-o", repo, "--platform", "tensorrt_plan")
    r = run_cli(*args, "--precision", "fp16", "--max-batch", "16", "--warmup", "256")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "--max-batch 16 is above the" in r.stderr and "largest batch 4" in r.stderr
    r = run_cli(*args, "--precision", "fp16", "--max-batch", "4", "--warmup", "1024")
    assert r.returncode == 1 and "warm-up size 1024 fits none" in r.stderr
    assert "largest side 512" in r.stderr
    assert not repo.exists() or not any(repo.iterdir())  # nothing half-written
    r = run_cli(*args, "--precision", "fp16", "--max-batch", "4", "--warmup", "512")
    assert r.returncode == 0, r.stderr
