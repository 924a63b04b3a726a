"""`styleship serve --ui`: a one-page playground in front of the served models.

The page (static/index.html, app.js, app.css: no CDN, it works offline) lets a
person pick a served model, a photo (uploaded, or one of the sample photos),
a style (the bundle's bank, a sample painting, or an uploaded painting),
strength and colour preservation, and shows the result beside the input with
the request's latency and the engine that ran it.

Every stylization goes through the running Triton server with the same
`Client` that `styleship client` uses, so what a person tries here is what
production requests get: the same decoding, limits, batching and errors.
The page's server is aiohttp (already installed with tritonclient[http]) on
its own event loop in a daemon thread; the blocking Triton calls run in a
small thread pool so a slow stylization never stalls the page. Any failure
(a bad upload, an image over the limits, Triton refusing) becomes a JSON
`{"error": ...}` the page shows as a message; the server keeps running.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from styleship.errors import BackendUnavailable, InputError, StyleshipError

STATIC = Path(__file__).with_name("static")
ASSETS = Path(__file__).resolve().parents[2] / "assets"  # present in a source checkout
SAMPLES = ASSETS / "content"
PAINTINGS = ASSETS / "styles"
MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
log = logging.getLogger("styleship.ui")


@dataclass(frozen=True)
class UiModel:
    """What the page needs to know about one served bundle."""

    name: str
    backend: str  # the engine behind it (the server's Stylizer), shown beside each result
    precision: str
    styles: tuple[str, ...] = ()  # bank names: ready style ids
    takes_style: bool = True  # False for wrapped models, whose style is in their weights
    uploads: bool = True  # a `<name>_style` model encodes uploaded paintings (not multistyle26)


@dataclass
class Choice:
    """One stylization asked for by the page, parsed from its form."""

    model: str
    content: bytes
    content_name: str
    style: str | None  # a bank name, or None with `style_bytes`, or None for wrapped models
    style_bytes: bytes | None = None
    alpha: float = 1.0
    preserve_color: bool = False
    fmt: str = "jpg"


@dataclass
class Outcome:
    image: str  # base64 of the encoded result
    mime: str
    latency_ms: float  # the stylize request through Triton, send to response
    style_ms: float | None  # the style upload before it, when the style was a painting
    backend: str
    precision: str
    model: str
    style_id: str | None = None


def _images_in(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MIME)
    return {p.stem: p for p in files}


def _number(text: str | None, default: float, label: str) -> float:
    if text in (None, ""):
        return default
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{label} must be a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{label} must be in [0, 1], got {value:g}")
    return value


class Playground:
    """The page and its small JSON API, served from a daemon thread until `stop()`."""

    def __init__(
        self,
        triton_url: str,
        models: Sequence[UiModel],
        host: str = "127.0.0.1",
        port: int = 8080,
        samples: Path = SAMPLES,
        paintings: Path = PAINTINGS,
        max_upload_mb: int = 32,
        timeout_s: float = 120.0,
    ) -> None:
        if not models:
            raise InputError("the playground needs at least one served model")
        self.triton_url = triton_url
        self.models = {m.name: m for m in models}
        self.host, self.port = host, port
        self.samples = _images_in(samples)
        self.paintings = _images_in(paintings)
        self.max_upload = max_upload_mb * 1024 * 1024
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="styleship-ui")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = "localhost" if self.host in ("127.0.0.1", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    # ---- the work behind the API, in plain (blocking) Python -------------------------------

    def catalogue(self) -> dict:
        return {
            "models": [asdict(m) for m in self.models.values()],
            "samples": list(self.samples),
            "paintings": list(self.paintings),
            "max_upload_mb": self.max_upload // (1024 * 1024),
        }

    def stylize(self, choice: Choice) -> Outcome:
        """One stylization through Triton: upload the painting if any, then stylize by id."""
        from styleship.serve.client import Client

        model = self.models.get(choice.model)
        if model is None:
            raise InputError(f"unknown model {choice.model!r} (served: {', '.join(self.models)})")
        if choice.fmt not in ("jpg", "png"):
            raise InputError(f"format must be jpg or png, got {choice.fmt!r}")
        style_ms = None
        with Client(self.triton_url, model.name, timeout_s=self.timeout_s) as client:
            style_id = choice.style
            if not model.takes_style:
                style_id = None
            elif choice.style_bytes is not None:
                if not model.uploads:
                    raise InputError(f"{model.name} takes no painting: pick one of its styles")
                started = time.perf_counter()
                style_id = client.upload_style(choice.style_bytes)
                style_ms = (time.perf_counter() - started) * 1000
            elif style_id is None:
                raise InputError("pick a style or upload a painting")
            started = time.perf_counter()
            data = client.stylize(
                choice.content, style_id, choice.alpha, choice.preserve_color, choice.fmt
            )
            latency_ms = (time.perf_counter() - started) * 1000
        return Outcome(
            image=base64.b64encode(data).decode("ascii"),
            mime=MIME[f".{choice.fmt}"],
            latency_ms=round(latency_ms, 1),
            style_ms=None if style_ms is None else round(style_ms, 1),
            backend=model.backend,
            precision=model.precision,
            model=model.name,
            style_id=style_id,
        )

    # ---- aiohttp ---------------------------------------------------------------------------

    async def _choice(self, request) -> Choice:
        from aiohttp import web

        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            limit = self.max_upload // (1024 * 1024)
            raise InputError(f"the upload is over the playground's {limit} MB limit") from None
        except ValueError as exc:  # a malformed multipart body
            raise InputError(f"unreadable form: {exc}") from None

        def upload(name: str) -> tuple[bytes, str] | None:
            part = form.get(name)
            if part is None or isinstance(part, str):
                return None
            data = part.file.read()
            return (data, part.filename or name) if data else None

        content = upload("content")
        sample = str(form.get("sample") or "")
        if content is None:
            if sample not in self.samples:
                raise InputError("upload a photo or pick a sample")
            content = (self.samples[sample].read_bytes(), self.samples[sample].name)
        style = str(form.get("style") or "")
        style_bytes = None
        if style == "upload":
            painting = upload("style_file")
            if painting is None:
                raise InputError("choose a painting file to upload as the style")
            style_bytes, style = painting[0], None
        elif style.startswith("painting:"):
            name = style.removeprefix("painting:")
            if name not in self.paintings:
                raise InputError(f"no sample painting named {name!r}")
            style_bytes, style = self.paintings[name].read_bytes(), None
        elif style.startswith("bank:"):
            style = style.removeprefix("bank:")
        else:
            style = style or None
        return Choice(
            model=str(form.get("model") or ""),
            content=content[0],
            content_name=content[1],
            style=style,
            style_bytes=style_bytes,
            alpha=_number(form.get("alpha"), 1.0, "strength"),
            preserve_color=str(form.get("preserve_color") or "") in ("1", "true", "on"),
            fmt=str(form.get("format") or "jpg"),
        )

    def _app(self):
        from aiohttp import web

        async def index(_request):
            return web.FileResponse(STATIC / "index.html")

        async def catalogue(_request):
            return web.json_response(self.catalogue())

        def file_route(files: dict[str, Path]):
            async def handler(request):
                path = files.get(request.match_info["name"])
                if path is None:
                    raise web.HTTPNotFound(text="no such image")
                return web.FileResponse(path, headers={"Content-Type": MIME[path.suffix.lower()]})

            return handler

        async def stylize(request):
            choice = await self._choice(request)
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(self._pool, self.stylize, choice)
            return web.json_response(asdict(outcome))

        @web.middleware
        async def errors(request, handler):
            """Every API failure is a JSON message for the page; none reaches aiohttp's logs
            as an unhandled exception, and the server keeps serving."""
            try:
                return await handler(request)
            except web.HTTPException:
                raise
            except StyleshipError as exc:  # InputError, the client's ServerError, ...
                return web.json_response({"error": str(exc)}, status=400)
            except Exception as exc:  # a bug: say so on the page, keep it in the log
                log.exception("playground request failed")
                text = f"internal error: {type(exc).__name__}: {exc}"
                return web.json_response({"error": text}, status=500)

        app = web.Application(middlewares=[errors], client_max_size=self.max_upload)
        app.router.add_get("/", index)
        app.router.add_get("/api/models", catalogue)
        app.router.add_post("/api/stylize", stylize)
        app.router.add_get("/samples/{name}", file_route(self.samples))
        app.router.add_get("/paintings/{name}", file_route(self.paintings))
        app.router.add_static("/static/", STATIC, show_index=False)
        return app

    def _serve(self) -> None:
        from aiohttp import web

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self._app(), access_log=None)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, self.host, self.port).start())
        except OSError as exc:
            self._error = InputError(
                f"the playground cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            )
            loop.run_until_complete(runner.cleanup())
            loop.close()
            self._started.set()
            return
        self._loop = loop
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def start(self) -> None:
        """Listen; returns once the port is bound (or raises why it could not be)."""
        try:
            import aiohttp  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(
                "the playground needs aiohttp: pip install 'styleship[serve]'"
            ) from exc
        self._thread = threading.Thread(target=self._serve, name="styleship-ui", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Playground:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def for_server(served, config, port: int) -> Playground:
    """The playground for a `Server`'s bundles, talking to its own HTTP endpoint."""
    host = "127.0.0.1" if config.host in ("0.0.0.0", "localhost") else config.host
    models = [
        UiModel(
            name=e.name,
            backend=e.stylizers[0].backend_name,
            precision=e.stylizers[0].precision,
            styles=e.styles,
            takes_style=bool(e.bundle.style_code),
            uploads=bool(e.style),
        )
        for e in served
    ]
    return Playground(f"http://{host}:{config.http_port}", models, config.host, port)
