"""Commands around the server: serve, client, loadtest."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import typer

from styleship.cli._common import JSON_OPT, _kv_table, _print, app, engine_line, err, out


def _levels(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated counts, got {text!r}") from None


def _quiet_pytriton(log_file: Path | None) -> None:
    """PyTriton logs a traceback per failed request: keep those in the log file, off the console."""
    logger = logging.getLogger("pytriton")
    logger.propagate = False
    logger.handlers.clear()
    if log_file is not None:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    else:
        logger.addHandler(logging.NullHandler())


@app.command()
def serve(
    bundles: list[Path] = typer.Argument(..., help="Bundle directories to serve."),
    backend: str = typer.Option(
        "auto",
        help="auto: the fastest engine here that the bundle's quality records clear "
        "(measured once per machine, as for stylize); or ort-cpu, ort-cuda, ort-trt, "
        "tensorrt, openvino.",
    ),
    precision: str = typer.Option("auto", help="auto, or fp32, bf16, int8 (openvino), fp16 (GPU)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; 0.0.0.0 for all."),
    http_port: int = typer.Option(8000, min=1, max=65535),
    grpc_port: int = typer.Option(8001, min=1, max=65535),
    metrics_port: int = typer.Option(8002, min=1, max=65535),
    max_batch: int = typer.Option(16, min=1, help="Largest batch Triton forms."),
    max_queue_delay_us: int = typer.Option(
        5000, min=0, help="How long Triton waits to fill a batch (where batches run)."
    ),
    batching: str = typer.Option(
        "auto",
        help="auto: batch engine runs only where the engine runs batches faster per image "
        "(measured once); on; off (one request per engine run).",
    ),
    max_queue: int = typer.Option(
        0, min=0, help="Queued requests beyond this are rejected (0: no bound; see docs)."
    ),
    timeout_ms: int = typer.Option(
        0, min=0, help="Queued longer than this: rejected (0: never; see docs)."
    ),
    instances: int = typer.Option(1, min=1, help="Model instances (each owns its sessions)."),
    max_pixels: int = typer.Option(16_000_000, min=256, help="Largest image accepted."),
    exit_timeout: int = typer.Option(30, min=0, help="Seconds in-flight requests get on stop."),
    log_file: Path = typer.Option(None, help="Triton's log (default: a file under /tmp)."),
    verbose: bool = typer.Option(False, "--verbose", help="Triton's log on the console."),
    ui: bool = typer.Option(False, "--ui", help="Also serve the browser playground."),
    ui_port: int = typer.Option(8080, min=1, max=65535, help="The playground's port."),
    as_json: bool = JSON_OPT,
) -> None:
    """Serve bundles with NVIDIA Triton (PyTriton): <name>_style and <name> per bundle.

    Dynamic batching, a bounded queue, a style-code cache (stylize by style_id),
    health at /v2/health/ready and Prometheus metrics. Stops cleanly on Ctrl-C
    or SIGTERM, letting in-flight requests finish.

    --ui adds a one-page playground (its own port, --ui-port) that sends every
    try to this Triton server: pick a model, a photo and a style, see the result.

    Example: styleship serve assets/models/stvae-demo.stvae --http-port 8000

    Example: styleship serve build/magenta.magenta --ui   (then open http://localhost:8080)
    """
    from styleship.serve.server import ServeConfig, Server, queue_line, urls

    if log_file is None and not verbose:
        log_file = Path(tempfile.gettempdir()) / f"styleship-triton-{http_port}.log"
    if not verbose:
        _quiet_pytriton(log_file)
    config = ServeConfig(
        backend=backend,
        precision=precision,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        max_batch=max_batch,
        max_queue_delay_us=max_queue_delay_us,
        batching=batching,
        max_queue=max_queue,
        timeout_ms=timeout_ms,
        instances=instances,
        max_pixels=max_pixels,
        exit_timeout_s=exit_timeout,
        log_file=None if verbose else log_file,
        verbose=verbose,
    )
    server = Server(bundles, config)
    playground = None
    try:
        if ui:  # bound before Triton starts, so a taken port fails fast
            from styleship.serve.ui import for_server

            playground = for_server(server.served, config, ui_port)
            playground.start()
        with err.status("starting Triton"):
            server.start()
    except BaseException:
        if playground is not None:
            playground.stop()
        server.stop()
        raise
    try:
        where = urls(config) | ({"playground": playground.url} if playground else {})
        first = server.served[0].name
        info = {
            "models": server.model_names,
            **{
                f"engine {e.name}": engine_line(e.stylizers[0].choice).removeprefix("engine: ")
                for e in server.served
            },
            **{f"batching {e.name}": e.why_batching for e in server.served},
            "queue": queue_line(config),
            "backend": server.served[0].stylizers[0].backend_name,
            **where,
            "log": str(log_file) if log_file else None,
        }
        examples = [
            f"curl -s {where['http']}/v2/models/{first}/ready -o /dev/null -w '%{{http_code}}\\n'",
            f"curl -s {where['metrics']} | grep nv_inference_count",
            f"styleship client {where['http']} photo.jpg -m {first} -s painting.jpg -o out.jpg",
        ]
        if as_json:
            _print({"status": "ready", **info, "examples": examples}, True)
        else:
            out.print(_kv_table("styleship serve: ready (Ctrl-C to stop)", info))
            out.print("try:\n  " + "\n  ".join(examples), markup=False, highlight=False)
        server.wait()
    finally:
        with err.status("stopping (in-flight requests finish first)"):
            if playground is not None:
                playground.stop()
            server.stop()
    _print({"status": "stopped"}, as_json, "stopped")


@app.command()
def client(
    url: str = typer.Argument(..., help="http://host:port or grpc://host:port"),
    content: Path = typer.Argument(..., help="Content image."),
    output: Path = typer.Option(..., "-o", "--out", help="Output image (format by extension)."),
    model: str = typer.Option(
        None, "--model", "-m", help="Served model name (default: the only one it serves)."
    ),
    style: Path = typer.Option(
        None, "--style", "-s", help="Style image to upload (none for wrapped models)."
    ),
    style_id: str = typer.Option(None, help="A style id from an earlier upload."),
    alpha: float = typer.Option(1.0, min=0.0, max=1.0, help="Style strength."),
    preserve_color: bool = typer.Option(False, "--preserve-color"),
    timeout: float = typer.Option(60.0, min=0.1, help="Seconds to wait for the server."),
    as_json: bool = JSON_OPT,
) -> None:
    """Stylize one image through a running `styleship serve` (HTTP or gRPC).

    Example: styleship client http://localhost:8000 photo.jpg -m stvae-demo -s starry.jpg -o out.jpg
    """
    from styleship import _atomic
    from styleship.errors import InputError
    from styleship.runtime import image as im
    from styleship.serve.client import Client

    if style is not None and style_id is not None:
        raise typer.BadParameter("give --style or --style-id, not both")
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in ("png", "jpg", "jpeg", "webp"):
        raise InputError("output must end in .png, .jpg, .jpeg or .webp")
    data = im.read_bytes(content)
    with Client(url, model, timeout_s=timeout) as c:
        if style is not None:
            style_id = c.upload_style(im.read_bytes(style))
        result = c.stylize(data, style_id, alpha, preserve_color, fmt)
    _atomic.write_bytes(output, result)
    _print(
        {"output": str(output), "style_id": style_id, "bytes": len(result)},
        as_json,
        f"wrote {output} (style_id {style_id})",
    )


@app.command()
def loadtest(
    url: str = typer.Argument(..., help="http://host:port or grpc://host:port"),
    model: str = typer.Option(
        None, "--model", "-m", help="Served model name (default: the only one it serves)."
    ),
    concurrency: str = typer.Option("1,8,32,64", help="Client counts, one level each."),
    duration: float = typer.Option(30.0, min=0.1, max=600.0, help="Seconds per level."),
    max_requests: int = typer.Option(100_000, min=1, help="Most requests per level."),
    size: int = typer.Option(512, min=16, max=4096, help="Side of the synthetic content."),
    content: Path = typer.Option(None, help="Content image (default: synthetic, --size)."),
    style: Path = typer.Option(None, help="Style image (default: synthetic)."),
    bundle: Path = typer.Option(
        None, help="Also run this bundle in-process for as long as a level, to compare."
    ),
    backend: str = typer.Option(None, help="Backend for the in-process comparison."),
    out_dir: Path = typer.Option(
        Path("build/loadtest"), "--out", help="Where loadtest.json/.md/.png go."
    ),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Load a non-loopback host."),
    as_json: bool = JSON_OPT,
) -> None:
    """Closed-loop load test: throughput, p50/p90/p99 and errors at each concurrency.

    Example: styleship loadtest http://localhost:8000 -m stvae-demo --concurrency 1,8 --duration 10
    """
    from styleship.runtime import image as im
    from styleship.serve import loadtest as lt
    from styleship.serve.client import Client

    if not allow_remote:
        lt.check_loopback(url)
    if model is None:
        with Client(url, None) as c:
            model = c.model
    content_bytes = im.read_bytes(content) if content else lt.synthetic_image(size, seed=1)
    style_bytes = im.read_bytes(style) if style else lt.synthetic_image(256, seed=2)
    levels = _levels(concurrency)

    def show(level) -> None:
        if not as_json:
            p99 = f"{level.latency.p99_ms:.0f} ms" if level.latency else "-"
            err.print(
                f"concurrency {level.concurrency}: {level.throughput_rps:.2f} req/s, "
                f"p99 {p99}, {level.errors} errors"
            )

    results = lt.run_loadtest(
        url,
        model,
        content_bytes,
        style_bytes,
        levels,
        duration,
        max_requests,
        on_level=show,
    )
    if bundle is not None:
        if not as_json:
            err.print(f"in process: {bundle}, {duration:g} s")
        results["in_process"] = lt.in_process(
            bundle, content_bytes, style_bytes, backend, levels, duration
        )
    paths = lt.write_reports(results, out_dir)
    if as_json:
        _print({**results, "files": [str(p) for p in paths]}, True)
    else:
        out.print(lt.render_markdown(results), markup=False, highlight=False)
        out.print(f"wrote {', '.join(str(p) for p in paths)}", markup=False, highlight=False)
