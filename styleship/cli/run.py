"""Commands that run models: stylize, gatys."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.progress import TextColumn

from styleship import _atomic
from styleship.cli._common import (
    JSON_OPT,
    _print,
    _weights,
    app,
    choice_json,
    engine_line,
    err,
    note,
    out,
    progress,
)
from styleship.errors import InputError


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise typer.BadParameter(f"{flag} takes a number or 'auto', not {text!r}") from None


def _stylize_video(
    st, src: Path, dst: Path, code, alpha, preserve_color, stability, batch, as_json: bool
) -> None:
    from styleship.runtime.video import probe, stylize_video

    info = probe(src)
    bar = progress(as_json, TextColumn("{task.fields[fps]:.1f} frames/s"))
    with bar:
        task = bar.add_task("frames", total=info.frames or None, fps=0.0)
        started = time.perf_counter()
        count = 0

        def tick() -> None:
            nonlocal count
            count += 1
            bar.update(task, advance=1, fps=count / (time.perf_counter() - started))

        result = stylize_video(
            st, src, dst, code, alpha, preserve_color, stability, batch, on_frame=tick
        )
    result["frames_per_s"] = round(count / (time.perf_counter() - started), 2)
    result |= {"backend": st.backend_name, "precision": st.precision}
    result["choice"] = choice_json(st.choice)
    _print(
        result,
        as_json,
        f"wrote {dst} ({result['frames']} frames, {result['frames_per_s']} frames/s)",
    )
    if not as_json:
        note(engine_line(st.choice))


def _style_sources(values: list[str] | None) -> list[str | Path]:
    """-s values: an existing file is a style image; any other text goes to the Stylizer as is.

    Names of styles stored inside a bundle (and id:weight mixes) are the Stylizer's to
    resolve; a value that is neither is reported there ("no such file") in one line.
    """
    return [Path(v) if Path(v).is_file() else v for v in values or []]


def _stylize_one(
    st, source, target: Path | None, fmt: str, styles: list, options: dict, as_json: bool
) -> None:
    """One image to one file, or to standard output (`target` None) with nothing else there."""
    from styleship.runtime import image as im

    result = st.stylize(source, styles=styles, **options)
    if target is None:
        sys.stdout.buffer.write(im.encode(result, fmt))
        sys.stdout.buffer.flush()
        return
    if isinstance(source, Path) and target.resolve() == source.resolve():
        raise InputError(f"output {target} would overwrite an input")
    im.write_image(target, result)
    label = "standard input" if isinstance(source, im.Image) else str(source)
    data = {
        "backend": st.backend_name,
        "precision": st.precision,
        "choice": choice_json(st.choice),
        "results": [
            {"input": label, "output": str(target), "error": None, "tiling": st.last_tiling}
        ],
    }
    if as_json:
        _print(data, True)
    else:
        out.print(f"wrote: {target}", markup=False, highlight=False)
        note(engine_line(st.choice))


def _bytes(text: str, option: str) -> int:
    """A size like 8G, 512M, 2.5GiB or a plain number of bytes."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in units else ""
    try:
        value = float(t[: len(t) - len(unit)]) * units[unit]
    except ValueError:
        value = -1.0
    if value <= 0:
        raise InputError(f"{option} takes a size like 8G or 512M, not {text!r}")
    return int(value)


@app.command()
def stylize(
    contents: list[str] = typer.Argument(
        ..., help="Content images, directories or globs; - reads one image from standard input."
    ),
    model: Path = typer.Option(..., "--model", "-m", help="Bundle directory."),
    style: list[str] = typer.Option(
        None, "--style", "-s", help="Style image; repeat to mix styles (not for wrapped models)."
    ),
    weights: str = typer.Option(None, help="Mixing weights, e.g. 0.7,0.3 (default: equal)."),
    alpha: float = typer.Option(1.0, min=0.0, max=1.0, help="Style strength: 0 keeps the content."),
    preserve_color: bool = typer.Option(
        False, "--preserve-color", help="Keep the content's colours."
    ),
    max_size: int = typer.Option(None, help="Shrink contents so the long side is at most this."),
    style_size: int = typer.Option(512, help="Long side the style image is encoded at."),
    backend: str = typer.Option(
        "auto",
        help="auto: the fastest engine here that the bundle's quality records clear "
        "(measured once per machine, then cached); or ort-cpu, ort-cuda, ort-trt, "
        "tensorrt, openvino.",
    ),
    precision: str = typer.Option(
        "auto",
        help="auto (with --backend: its fastest cleared precision), or fp32, bf16 and int8 "
        "(openvino), int8 (ort-cpu), fp16 (GPU).",
    ),
    out_path: str = typer.Option(
        ".",
        "--out",
        "-o",
        help="Output directory (made if missing); for one image also a file name "
        "(.png, .jpg, ...), or - for standard output.",
    ),
    fmt: str = typer.Option(
        "png", "--format", help="Format of an image written to standard output or from stdin."
    ),
    suffix: str = typer.Option("_stylized", help="Appended to each output's file name."),
    max_pixels: int = typer.Option(
        250_000_000, help="Refuse images with more pixels than this (before decoding)."
    ),
    tile: str = typer.Option(
        "auto",
        help="Tile side in pixels, 0 for never, or auto: tile only when the untiled run "
        "would not fit --max-memory (from the engine's measured bytes per pixel).",
    ),
    max_memory: str = typer.Option(
        None,
        help="Memory budget for --tile auto, e.g. 8G or 512M (default: half the memory "
        "available now).",
    ),
    overlap: int = typer.Option(
        64,
        min=0,
        help="Pixels neighbouring tiles share (blended tiles of bundles without a split).",
    ),
    stability: float = typer.Option(
        0.0, min=0.0, max=0.99, help="Video: blend static regions with the previous frame."
    ),
    batch: int = typer.Option(4, min=1, help="Video: frames per engine run."),
    as_json: bool = JSON_OPT,
) -> None:
    """Stylize images, or one video, with a bundle; bad image files are reported and skipped.

    -o is a directory, created if missing; with one content image it may instead
    name the output file (by its image extension), or be - to write the image to
    standard output (as --format, default png). - as the content reads the image
    from standard input, so styleship can sit in a pipe (into a directory it is
    written as stdin_stylized.<format>). A single
    .mp4/.m4v/.mov/.avi/.mkv input is stylized frame by frame into -o (a video
    file, or a directory); fps and size are kept, audio is not.

    Example: styleship stylize photos/ -m starry.stvae -s starry.jpg -s scream.jpg
    --weights 0.7,0.3 --alpha 0.8 -o out/

    Example: styleship stylize photo.jpg -m starry.stvae -s starry.jpg -o result.jpg

    Example: cat photo.jpg | styleship stylize - -m starry.stvae -s starry.jpg -o - > out.png

    Example: styleship stylize clip.mp4 -m starry.stvae -s starry.jpg -o out.mp4 --stability 0.6
    """
    from styleship.runtime import image as im
    from styleship.runtime.bundle import Bundle
    from styleship.runtime.styles import check_styles
    from styleship.runtime.stylizer import Stylizer
    from styleship.runtime.video import is_video

    mix = _weights(weights)
    tile_side: int | str = "auto" if tile == "auto" else _int(tile, "--tile")
    styles = _style_sources(style)
    to_stdout = out_path == "-"
    stdin = contents == ["-"]
    if "-" in contents and not stdin:
        raise InputError("- (standard input) must be the only content")
    if to_stdout and as_json:
        raise typer.BadParameter("--json prints on standard output, where -o - writes the image")
    fmt = "." + fmt.lower().lstrip(".")
    if fmt not in im.WRITE_EXTENSIONS:
        raise InputError(f"--format takes one of {', '.join(e[1:] for e in im.WRITE_EXTENSIONS)}")
    out_dir = Path(out_path)
    video = (
        Path(contents[0]) if len(contents) == 1 and not stdin and is_video(contents[0]) else None
    )
    if video and to_stdout:
        raise InputError("a video cannot go to standard output; give a file or directory")
    files = [] if video or stdin else im.find_images(contents)
    names_file = out_dir.suffix.lower() in im.WRITE_EXTENSIONS and not out_dir.is_dir()
    if (names_file or to_stdout) and len(files) > 1:
        raise InputError(
            f"-o {out_path} takes one image, but {len(files)} images were given; give a directory"
        )
    # Decode standard input before loading the bundle: an empty pipe fails fast.
    source = im.decode(sys.stdin.buffer.read(), "standard input", max_pixels) if stdin else None
    options = {
        "weights": mix,
        "alpha": alpha,
        "preserve_color": preserve_color,
        "max_size": max_size,
        "tile": tile_side,
        "overlap": overlap,
        "max_memory": _bytes(max_memory, "--max-memory") if max_memory else None,
    }
    bundle = Bundle.load(model)
    check_styles(bundle, styles)  # before an engine is loaded, or timed for the first time
    # The first run of a bundle on a machine times its engines (a few seconds, once): a
    # transient status says so; the engine line comes with the results.
    with err.status("loading the engine") as status:
        st = Stylizer(
            bundle,
            backend,
            precision=precision,
            style_size=style_size,
            max_pixels=max_pixels,
            log=status.update,
        )
    with st:
        st.check_engines(batch if video else 1, max_size)  # engine profiles, before any image
        if video:
            dst = (
                out_dir
                if is_video(out_dir)
                else out_dir / f"{video.stem}{suffix}{video.suffix.lower()}"
            )
            _atomic.ensure_dir(dst.parent)
            code = st.mixed_code(styles, mix)
            return _stylize_video(
                st, video, dst, code, alpha, preserve_color, stability, batch, as_json
            )
        if to_stdout or names_file or stdin:
            target = None if to_stdout else out_dir
            if stdin and not to_stdout and not names_file:
                target = _atomic.ensure_dir(out_dir) / f"stdin{suffix}{fmt}"
            return _stylize_one(
                st, source if stdin else files[0], target, fmt, styles, options, as_json
            )
        _atomic.ensure_dir(out_dir)
        bar = progress(as_json or len(files) == 1)  # one image: its own line says it all
        with bar:
            task = bar.add_task("stylizing", total=len(files))
            results = st.stylize_files(
                files,
                out_dir,
                suffix=suffix,
                on_done=lambda r: bar.advance(task),
                styles=styles,
                **options,
            )
    failed = [r for r in results if r.error]
    data = {
        "backend": st.backend_name,
        "precision": st.precision,
        "choice": choice_json(st.choice),
        "results": [
            {
                "input": str(r.input),
                "output": str(r.output) if r.output else None,
                "error": r.error,
                "tiling": r.tiling,
            }
            for r in results
        ],
    }
    if as_json:
        _print(data, True)
    else:
        for r in results:
            (err if r.error else out).print(
                f"{'error' if r.error else 'wrote'}: {r.error or r.output}", markup=False
            )
    if failed:
        if len(results) > 1:
            err.print(f"{len(failed)} of {len(results)} images failed")
        raise typer.Exit(1)
    if not as_json:
        note(engine_line(st.choice))


@app.command()
def gatys(
    content: Path = typer.Argument(..., help="Content photo."),
    style: Path = typer.Argument(..., help="Style painting."),
    out_path: Path = typer.Option(..., "-o", "--out", help="Output image (.png, .jpg, ...)."),
    steps: int = typer.Option(300, min=1, help="Closure calls (forward + backward passes)."),
    size: int = typer.Option(512, min=16, help="Long side of content and style."),
    optimizer: str = typer.Option("lbfgs", help="lbfgs or adam."),
    lr: float = typer.Option(None, help="Step size (default: 1.0 for lbfgs, 0.02 for adam)."),
    init: str = typer.Option("content", help="Start from the content image or from noise."),
    content_weight: float = typer.Option(1.0, help="α: weight of the relu4_2 content loss."),
    style_weight: float = typer.Option(1e6, help="β: weight of the Gram style loss."),
    vgg: str = typer.Option(None, help="VGG-19 weights: PATH, hub, or random:SEED."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    tf32: bool = typer.Option(False, "--tf32", help="Allow TF32 matmuls/convolutions on GPU."),
    seed: int = typer.Option(0, help="Seed for noise initialisation."),
    as_json: bool = JSON_OPT,
) -> None:
    """The iterative Gatys baseline (CVPR 2016): optimise the image itself.

    It runs exactly --steps closure calls (L-BFGS tolerances disabled), so its
    cost is comparable between runs.

    Example: styleship gatys photo.jpg starry.jpg --steps 300 --size 512 -o out.png
    """
    import cv2

    from styleship.models.gatys import Gatys, GatysConfig
    from styleship.runtime import image as im

    if out_path.suffix.lower() not in im.WRITE_EXTENSIONS:
        raise InputError(f"cannot write {out_path.suffix or 'files without an extension'}")
    config = GatysConfig(
        content_weight=content_weight,
        style_weight=style_weight,
        optimizer=optimizer,
        lr=lr if lr is not None else (1.0 if optimizer == "lbfgs" else 0.02),
        init=init,
        seed=seed,
    )
    content_img = im.read_image(content)
    rgb = im.resize_max_side(content_img.rgb, size)
    im.check_min_size(rgb, "content image")
    style_rgb = im.resize_max_side(im.read_image(style).rgb, size)
    im.check_min_size(style_rgb, "style image")
    baseline = Gatys(config, vgg, device, tf32)
    with progress(as_json) as bar:
        task = bar.add_task("gatys", total=steps)
        result = baseline.run(
            rgb, style_rgb, steps, on_call=lambda n: bar.update(task, completed=n)
        )
    alpha = content_img.alpha
    if alpha is not None and alpha.shape[:2] != rgb.shape[:2]:
        alpha = cv2.resize(alpha, rgb.shape[1::-1], interpolation=cv2.INTER_AREA)
    im.write_image(out_path, im.Image(result.image, alpha, content_img.bit_depth))
    last = result.checkpoints[-1]
    data = {"output": str(out_path), "seconds": result.seconds, **last, "config": result.config}
    _print(
        data,
        as_json,
        f"wrote {out_path}: {result.calls} calls in {result.seconds:.1f} s, "
        f"content loss {last['content_loss']:.3g}, style loss {last['style_loss']:.3g}",
    )
