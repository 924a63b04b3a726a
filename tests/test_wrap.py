"""`styleship wrap`: a foreign image-to-image ONNX model, defined and exported here."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from conftest import run_cli

torch = pytest.importorskip("torch")
# The foreign models are exported the way most published ones were: TorchScript-based.
pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript")

from styleship.runtime import image as im  # noqa: E402
from styleship.runtime.stylizer import Stylizer  # noqa: E402
from styleship.serve.models import StylizeModel, stylize_ports  # noqa: E402


class Foreign(torch.nn.Module):
    """Someone else's conventions: NHWC, BGR, pixels in 0..255."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        y = x.permute(0, 3, 1, 2) / 255.0
        return (torch.sigmoid(self.b(torch.relu(self.a(y)))) * 255.0).permute(0, 2, 3, 1)


class TwoInputs(torch.nn.Module):
    def forward(self, x, y):
        return x + y


class Classifier(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True)


def _export(model, args, path, names, fixed: bool = False):
    axes = None if fixed else {n: {0: "n", 2: "h", 3: "w"} for n in names}
    if isinstance(model, Foreign) and not fixed:
        axes = {n: {0: "n", 1: "h", 2: "w"} for n in names}
    torch.onnx.export(
        model.eval(),
        args,
        str(path),
        input_names=names[:-1],
        output_names=names[-1:],
        dynamic_axes=axes,
        dynamo=False,
    )
    return path


def test_wrapped_model_matches_the_foreign_model_through_the_adapters(tmp_path, contents):
    src = _export(Foreign(), (torch.rand(1, 32, 48, 3) * 255,), tmp_path / "net.onnx", ["x", "y"])
    out = tmp_path / "net.wrapped"
    proc = run_cli("wrap", src, "-o", out, "--layout", "NHWC", "--channels", "BGR", "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["style_code"] == {} and list(manifest["graphs"]) == ["stylizer"]
    rgb = im.read_image(contents[1]).rgb[:240, :320]  # a multiple of 8: no padding at the edges
    direct = ort.InferenceSession(str(src)).run(
        None, {"x": (rgb[None, :, :, ::-1] * 255).astype(np.float32)}
    )[0]
    expected = direct[0, :, :, ::-1] / 255.0
    with Stylizer(out, "ort-cpu", precision="fp32", cache_dir=None) as st:
        got = st.stylize(im.Image(rgb)).rgb
        half = st.stylize(im.Image(rgb), alpha=0.5).rgb
    assert np.abs(got - expected).max() < 1e-4
    assert np.abs(half - (0.5 * expected + 0.5 * rgb)).max() < 1e-4
    proc = run_cli("stylize", contents[1], "-m", out, "-o", tmp_path, "--max-size", "96")
    assert proc.returncode == 0 and (tmp_path / f"{contents[1].stem}_stylized.jpg").is_file()
    proc = run_cli("stylize", contents[1], "-m", out, "-s", contents[0], "-o", tmp_path)
    assert proc.returncode == 1 and "takes no style image" in proc.stderr
    # Served and exported like any bundle: one model, no style inputs, no _style model.
    with Stylizer(out, "ort-cpu", precision="fp32", cache_dir=None) as st:
        model = StylizeModel(st, im.DEFAULT_MAX_PIXELS, max_batch=4)
        pixels = im.to_uint8(rgb)[None]
        (response,) = model([{"pixels": pixels}])
    assert np.abs(response["pixels"][0] / 255.0 - expected).max() < 1 / 255 + 1e-4
    assert {p.name for p in stylize_ports(st.bundle)[0]} == {
        "image",
        "pixels",
        "alpha",
        "preserve_color",
        "format",
    }
    proc = run_cli("export-triton", out, "-o", tmp_path / "repo", "--kind", "KIND_CPU")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["net"]


def test_fixed_size_models_are_resized_in_and_out(tmp_path, contents):
    src = _export(
        Foreign(),
        (torch.rand(1, 64, 64, 3) * 255,),
        tmp_path / "fixed.onnx",
        ["x", "y"],
        fixed=True,
    )
    out = tmp_path / "fixed.wrapped"
    assert run_cli("wrap", src, "-o", out, "--layout", "NHWC", "--channels", "BGR").returncode == 0
    assert json.loads((out / "manifest.json").read_text())["normalisation"]["fixed_size"] == [
        64,
        64,
    ]
    with Stylizer(out, "ort-cpu", precision="fp32", cache_dir=None) as st:
        assert (
            st.stylize(contents[0], max_size=150).rgb.shape[:2]
            == im.resize_max_side(im.read_image(contents[0]).rgb, 150).shape[:2]
        )


def test_graphs_that_are_not_image_to_image_are_refused(tmp_path):
    two = _export(
        TwoInputs(),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)),
        tmp_path / "two.onnx",
        ["a", "b", "c"],
    )
    proc = run_cli("wrap", two, "-o", tmp_path / "two.wrapped")
    assert proc.returncode == 1 and "2 input(s)" in proc.stderr
    cls = _export(Classifier(), (torch.rand(1, 3, 16, 16),), tmp_path / "cls.onnx", ["x", "y"])
    proc = run_cli("wrap", cls, "-o", tmp_path / "cls.wrapped")
    assert proc.returncode == 1 and "output of the input's size" in proc.stderr
    assert not (tmp_path / "cls.wrapped").exists()  # nothing half-written
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    proc = run_cli("wrap", tmp_path / "junk.onnx", "-o", tmp_path / "junk.wrapped")
    assert proc.returncode == 1 and "not a valid ONNX model" in proc.stderr
    proc = run_cli("wrap", cls, "-o", tmp_path / "x.wrapped", "--layout", "NCWH")
    assert proc.returncode == 1 and "layout" in proc.stderr
