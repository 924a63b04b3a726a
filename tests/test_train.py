"""Training: learning on tiny data, exact resume, codebook usage, robustness."""

import csv
import itertools
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_TRAIN, run_cli, tiny_trainer  # noqa: E402

from styleship.models.checkpoint import load_checkpoint  # noqa: E402
from styleship.train import losses as L  # noqa: E402
from styleship.train.data import BatchMaker, FolderDataset  # noqa: E402
from styleship.train.trainer import Trainer, lr_at  # noqa: E402


def _trainer(family, assets, out, **over):
    return tiny_trainer(family, assets, out, **over)


def _log(out):
    with (out / "log.csv").open() as fh:
        return [
            (int(r["step"]), r["phase"], r["name"], float(r["value"])) for r in csv.DictReader(fh)
        ]


def _series(rows, name):
    return [v for _, _, n, v in rows if n == name]


def test_stvae_reconstruction_loss_falls(assets, tmp_path):
    _trainer("stvae", assets, tmp_path / "run", steps=40, phase1=1.0).run()
    l1 = _series(_log(tmp_path / "run"), "total")
    assert len(l1) == 40 and np.mean(l1[-5:]) < 0.7 * np.mean(l1[:5])


def test_vqvae_style_loss_falls_in_the_stylization_phase(assets, tmp_path):
    _trainer("vqvae", assets, tmp_path / "run", steps=40, phase1=0.0).run()
    rows = _log(tmp_path / "run")
    assert {phase for _, phase, _, _ in rows} == {"stylize"}
    style = _series(rows, "style")
    assert np.mean(style[-5:]) < 0.8 * np.mean(style[:5])


def test_codebook_usage_rises_above_a_floor(assets, tmp_path):
    final = _trainer("vqvae", assets, tmp_path / "run", steps=15, phase1=1.0).run()
    model, meta = load_checkpoint(final)
    # k-means init plus dead-code restarts keep at least half of the 64 codes in use.
    assert meta["training"]["codes_in_use"] >= 32
    assert int((model.quantizer.usage > 0).sum()) == meta["training"]["codes_in_use"]
    codes = _series(_log(tmp_path / "run"), "codes")
    assert codes[-1] >= 16  # distinct codes in the last batch of 2×4×4 + 2×4×4 = 64 vectors


@pytest.mark.parametrize("family", ["stvae", "vqvae"])
def test_resume_reproduces_the_uninterrupted_run(assets, tmp_path, family):
    """Interrupt after the step-6 checkpoint, resume, and compare every later loss exactly."""
    _trainer(family, assets, tmp_path / "a", steps=12, phase1=0.5, checkpoint_every=3).run()

    def stop_at_8(info):
        if info.step == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _trainer(family, assets, tmp_path / "b", steps=12, phase1=0.5, checkpoint_every=3).run(
            stop_at_8
        )
    load_checkpoint(tmp_path / "b" / "checkpoints" / "step_000006")  # last complete: loadable
    resumed = Trainer(
        family,
        assets / "content",
        assets / "styles",
        tmp_path / "b",
        "random:0",
        "demo",
        {
            **TINY_TRAIN,
            "steps": 12,
            "phase1": 0.5,
            "checkpoint_every": 3,
            "config": {"stvae": {"z_dim": 16, "matrix_size": 8}, "vqvae": {"codebook_size": 64}}[
                family
            ],
        },
        seed=0,
        workers=1,
        resume=True,
    )
    assert resumed.start == 6
    resumed.run()
    a, b = _log(tmp_path / "a"), _log(tmp_path / "b")
    assert a == b  # steps 1-12, every term, to the logged precision
    wa = load_checkpoint(tmp_path / "a" / "final")[0].state_dict()
    wb = load_checkpoint(tmp_path / "b" / "final")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_unreadable_training_images_are_skipped(assets, tmp_path):
    content = tmp_path / "content" / "nested"
    content.mkdir(parents=True)
    for p in (assets / "content").glob("*.jpg"):
        shutil.copy(p, content / p.name)
    (content / "broken.jpg").write_text("not an image")
    ds = FolderDataset(tmp_path / "content")
    batch = BatchMaker(ds, 32, 8, seed=0, stream=0, workers=2)(step=0)
    assert batch.shape == (8, 3, 32, 32) and batch.min() >= 0 and batch.max() <= 1
    assert len(ds.files) == 6
    for step in range(1, 10):
        BatchMaker(ds, 32, 8, seed=0, stream=0)(step)
    assert [p.name for p in ds.skipped] == ["broken.jpg"]
    again = BatchMaker(ds, 32, 8, seed=0, stream=0, workers=1)(step=0)
    assert np.array_equal(batch, again)  # same seed and step, same batch, any worker count


def test_added_files_draw_the_same_batches_wherever_they_live(assets, tmp_path):
    """Minted styles join the painting folder after its own files: a run directory that
    sorts before the assets (CI checked out at /check, runs under /tmp) once drew other
    paintings at every step than a checkout at /work did."""
    paintings = sorted((assets / "styles").glob("*.jpg"))
    batches = []
    for where in ("a_run", "z_run"):  # sorting before and after the painting folder
        extra = tmp_path / where
        extra.mkdir()
        for p in paintings[:2]:
            shutil.copy(p, extra / f"minted_{p.name}")
        folder = tmp_path / "styles"
        if not folder.is_dir():
            shutil.copytree(assets / "styles", folder)
        ds = FolderDataset(folder)
        ds.add_files(sorted(extra.glob("*.jpg")))
        assert [p.parent for p in ds.files[-2:]] == [extra, extra]
        make = BatchMaker(ds, 32, 4, seed=0, stream=1, workers=1)
        batches.append(np.stack([make(step) for step in range(12)]))
    assert np.array_equal(*batches)


def test_missing_vgg_source_is_a_clear_error(assets, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("STYLESHIP_VGG19", raising=False)
    proc = run_cli(
        "train",
        "stvae",
        "--content",
        assets / "content",
        "--style",
        assets / "styles",
        "-o",
        tmp_path / "run",
    )
    assert proc.returncode == 1 and "error: no VGG-19 weights" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(1.0, i, 100) for i in range(100)]
    assert lrs[0] < lrs[4] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1, abs=0.01)
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))


def test_adversarial_pieces():
    disc = L.PatchDiscriminator(channels=16, layers=2)
    logits = disc(torch.rand(2, 3, 32, 32))
    assert logits.shape[0] == 2 and logits.shape[1] == 1
    real, fake = torch.full((4,), 2.0), torch.full((4,), -2.0)
    assert L.hinge_d_loss(real, fake) == 0  # confident and right: no loss
    assert L.hinge_d_loss(fake, real) == pytest.approx(3.0)
    last = torch.nn.Parameter(torch.ones(3))
    main, adv = (last * 2).sum(), (last * 0.5).sum()
    assert L.adaptive_weight(main, adv, last) == pytest.approx(4.0, rel=1e-3)


def test_gram_loss_is_relative_so_random_features_do_not_silence_it():
    """A blank output costs exactly one per layer and a match nothing, at any feature scale:
    the plain Gram MSE was ~1e-5 on random VGG features, too small to train texture."""
    g = torch.Generator().manual_seed(0)
    style = {k: torch.rand(2, 8, 6, 6, generator=g) for k in L.STYLE_LAYERS}
    for scale in (1e-3, 1.0, 1e3):
        scaled = {k: v * scale for k, v in style.items()}
        blank = {k: torch.zeros_like(v) for k, v in scaled.items()}
        assert float(L.gram_loss(blank, scaled)) == pytest.approx(len(L.STYLE_LAYERS), rel=1e-5)
        assert float(L.gram_loss(scaled, scaled)) == 0.0
    half = {k: v * 0.5 for k, v in style.items()}  # G scales by 1/4: (3/4)² per layer
    assert float(L.gram_loss(half, style)) == pytest.approx(4 * 0.5625, rel=1e-5)
