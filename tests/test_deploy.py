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
    from styleship.export.fp16 import fp32_nodes, scopes

    model = onnx.load(str(vq_bundle / "fused.onnx"))
    kept = set(fp32_nodes(model))
    by_op = {}
    for n in model.graph.node:
        by_op.setdefault(n.op_type, []).append(n.name in kept)
    # the distance (ReduceL2 of the l2-norm), best score (ReduceMax, GreaterOrEqual) and
    # the two 1x1 Convs that score and look up the codes: called outside any module
    for op in ("ReduceL2", "ReduceMax", "GreaterOrEqual"):
        assert all(by_op[op]), op
    lookup = [n for n in model.graph.node if n.op_type == "Conv" and len(scopes(n)) == 2]
    assert len(lookup) == 2 and all(n.name in kept for n in lookup)
    assert not all(by_op["Conv"])


def _shared_bias_graph(path) -> None:
    """x -> Add(bias) [fp16] -> two Gemms [kept fp32] that read the same bias -> Add -> y:
    the pattern of the full-width ST-VAE that onnxruntime <= 1.31's converter broke (one
    fp16 tensor read by two fp32 nodes, each given a Cast of the same name)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.random(8, dtype=np.float32), "decoder.bias"),
        numpy_helper.from_array(rng.random((8, 8), dtype=np.float32), "w1"),
        numpy_helper.from_array(rng.random((8, 8), dtype=np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Add", ["x", "decoder.bias"], ["h"], name="shift"),
        helper.make_node("Gemm", ["h", "w1", "decoder.bias"], ["g1"], name="gemm1"),
        helper.make_node("Gemm", ["h", "w2", "decoder.bias"], ["g2"], name="gemm2"),
        helper.make_node("Add", ["g1", "g2"], ["y"], name="sum"),
    ]
    graph = helper.make_graph(
        nodes,
        "shared_bias",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.save(model, str(path))


def test_a_bias_shared_by_two_fp32_nodes_converts_to_a_valid_graph(tmp_path):
    import onnxruntime as ort

    from styleship.export.fp16 import convert

    src, dst = tmp_path / "shared.onnx", tmp_path / "shared.fp16.onnx"
    _shared_bias_graph(src)
    record = convert(src, dst)
    assert record["fp32_ops"] == {"Gemm": 2}
    half = onnx.load(str(dst))
    onnx.checker.check_model(half)
    outputs = [o for n in half.graph.node for o in n.output]
    assert len(outputs) == len(set(outputs)), "two nodes write one tensor"
    x = {"x": np.random.default_rng(1).random((2, 8), dtype=np.float32)}
    run = {p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (src, dst)}
    ref, out = (run[p].run(None, x)[0] for p in (src, dst))
    np.testing.assert_allclose(out, ref, rtol=2e-3)


def test_identical_casts_of_one_name_are_merged_and_others_left():
    from onnx import TensorProto, helper

    from styleship.export.fp16 import merge_duplicate_casts

    def cast(src: str, dst: str, to: int = TensorProto.FLOAT):
        return helper.make_node("Cast", [src], [dst], to=to, name=f"{dst}_node")

    info = helper.make_tensor_value_info("b_cast_to_fp32", TensorProto.FLOAT, [8])
    nodes = [
        cast("b", "b_cast_to_fp32"),
        helper.make_node("Relu", ["b_cast_to_fp32"], ["r1"]),
        cast("b", "b_cast_to_fp32"),  # what onnxruntime <= 1.31 adds for a second reader
        helper.make_node("Relu", ["b_cast_to_fp32"], ["r2"]),
        cast("c", "c32"),
        cast("d", "c32"),  # another input: not the same Cast, left for the checker to refuse
    ]
    graph = helper.make_graph(nodes, "g", [], [], value_info=[info, info])
    model = helper.make_model(graph)
    assert merge_duplicate_casts(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Cast", "Relu", "Relu", "Cast", "Cast"]
    assert [v.name for v in model.graph.value_info] == ["b_cast_to_fp32"]
    assert merge_duplicate_casts(model) == 0


def test_an_invalid_fp16_graph_is_one_export_error(tmp_path, monkeypatch):
    """What the benchmark sees when a converter makes an invalid graph: an ExportError
    (a failed row), not onnx's ValidationError stopping the suite."""
    from onnxruntime.transformers import float16

    from styleship.errors import ExportError
    from styleship.export.fp16 import convert

    def broken(model, **kw):
        model.graph.node.append(model.graph.node[-1])  # two nodes write y
        return model

    monkeypatch.setattr(float16, "convert_float_to_float16", broken)
    src = tmp_path / "shared.onnx"
    _shared_bias_graph(src)
    with pytest.raises(ExportError, match=r"^shared.onnx: the fp16 graph is not valid ONNX \("):
        convert(src, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


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
