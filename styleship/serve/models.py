"""The two served models of a bundle, as plain callables over Triton requests.

`<name>_style` turns a style image into a style code and a `style_id`; the
code is cached server-side, so clients then stylize by id. The styles of the
bundle's style bank are ready ids from the start: their names (or weighted
names, `a:0.7,b:0.3`) and their paintings' ids. `<name>` stylizes
content images (encoded bytes, or uint8 RGB pixels) with a style id or a code.
Each callable takes the requests Triton batched together (any mapping of
input name -> array with a leading batch axis) and returns one dict of
outputs per request. Decoded images that pad to the same size run as one
backend batch, so Triton's dynamic batching turns into real batched compute.

PyTriton reports errors per batch, not per request: a malformed request
fails the batch it was grouped with. Requests are validated before any
compute so that such a batch fails fast and the next one is unaffected.
Neither pytriton nor torch is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from styleship.errors import InputError, StyleshipError
from styleship.runtime import image as im
from styleship.runtime.bundle import Bundle, TensorSpec
from styleship.runtime.stylizer import Job, Stylizer


class BadRequest(Exception):
    """A request the server refuses; raised from the top of a model call, without the
    inner traceback, so Triton's error text stays short: `...BadRequest: <reason>`."""


def _refusing(call):
    """Turn a library error anywhere in a model call into one BadRequest line."""

    def wrapper(self, requests):
        try:
            return call(self, requests)
        except StyleshipError as exc:
            message = str(exc)
        raise BadRequest(message)

    wrapper.__doc__ = call.__doc__
    return wrapper


# Output formats a client may ask for through the `format` input.
FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp"}


@dataclass(frozen=True)
class Port:
    """One Triton input or output: per-request dims (the batch axis is implicit)."""

    name: str
    dtype: type | np.dtype
    dims: tuple[int, ...]
    optional: bool = False


def style_ports(bundle: Bundle) -> tuple[list[Port], list[Port]]:
    """Inputs and outputs of `<name>_style`: an encoded image or pixels in; id and code out."""
    inputs = [Port("image", bytes, (1,), True), Port("pixels", np.uint8, (-1, -1, 3), True)]
    codes = bundle.graph("style_encoder").outputs
    outputs = [Port("style_id", bytes, (1,)), *_code_ports(codes, optional=False)]
    return inputs, outputs


def stylize_ports(bundle: Bundle) -> tuple[list[Port], list[Port]]:
    """Inputs and outputs of `<name>`: content, a style (id or code), α, options."""
    codes = [t for t in bundle.graph("stylizer").inputs if t.kind == "code"]
    inputs = [
        Port("image", bytes, (1,), True),
        Port("pixels", np.uint8, (-1, -1, 3), True),
        *(
            [Port("style_id", bytes, (1,), True), *_code_ports(codes, optional=True)]
            if codes
            else []
        ),
        Port("alpha", np.float32, (1,), True),
        Port("preserve_color", np.bool_, (1,), True),
        Port("format", bytes, (1,), True),
    ]
    outputs = [Port("image", bytes, (1,)), Port("pixels", np.uint8, (-1, -1, 3))]
    return inputs, outputs


def _code_ports(codes: Sequence[TensorSpec], optional: bool) -> list[Port]:
    return [
        Port(
            t.name,
            np.float32,
            tuple(d if isinstance(d, int) else -1 for d in t.shape[1:]),
            optional,
        )
        for t in codes
    ]


def _scalar(row: np.ndarray) -> object:
    """The one value of a request row: a Python number, bool or bytes."""
    value = row.reshape(-1)[0]
    return value.item() if isinstance(value, np.generic) else value


def _text(value: object) -> str:
    raw = _scalar(value) if isinstance(value, np.ndarray) else value
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _rows(request: Mapping[str, np.ndarray]) -> int:
    sizes = {len(v) for v in request.values()}
    if len(sizes) != 1:
        raise InputError("all inputs of a request need the same batch size")
    return sizes.pop()


def _images(request: Mapping[str, np.ndarray], max_pixels: int, label: str) -> list[im.Image]:
    """The request's images, from exactly one of `image` (encoded) or `pixels` (uint8 RGB)."""
    if ("image" in request) == ("pixels" in request):
        raise InputError(f"send the {label} as exactly one of `image` (bytes) or `pixels`")
    if "image" in request:
        return [
            im.decode(bytes(row.reshape(-1)[0]), f"{label} image", max_pixels)
            for row in request["image"]
        ]
    pixels = request["pixels"]
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise InputError(f"{label} `pixels` must be uint8 of shape [batch, height, width, 3]")
    if pixels.shape[1] * pixels.shape[2] > max_pixels:
        raise InputError(f"{label} is over the {max_pixels / 1e6:g} MP limit")
    return [im.Image(rgb=row.astype(np.float32) / 255.0) for row in pixels]


class StyleModel:
    """`<name>_style`: style image -> style id and code, remembered for later requests."""

    def __init__(self, stylizer: Stylizer, max_pixels: int) -> None:
        self.stylizer = stylizer
        self.max_pixels = max_pixels

    @_refusing
    def __call__(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict]:
        images = [_images(r, self.max_pixels, "style") for r in requests]
        responses = []
        for request, rows in zip(requests, images):
            ids, codes = [], []
            for row, img in enumerate(rows):
                source = bytes(request["image"][row].reshape(-1)[0]) if "image" in request else img
                ids.append(self.stylizer.style_id(source))
                codes.append(self.stylizer.style_code(source))
            out = {"style_id": np.array([[i.encode()] for i in ids], dtype=object)}
            for name in self.stylizer.bundle.style_code:
                out[name] = np.concatenate([c[name] for c in codes]).astype(np.float32)
            responses.append(out)
        return responses


class StylizeModel:
    """`<name>`: content + style id or code (+ α, preserve-colour, format) -> image."""

    def __init__(self, stylizer: Stylizer, max_pixels: int, max_batch: int) -> None:
        self.stylizer = stylizer
        self.max_pixels = max_pixels
        self.max_batch = max_batch
        self.code_names = tuple(stylizer.bundle.style_code)

    def _codes(self, request: Mapping[str, np.ndarray], rows: int) -> list[dict[str, np.ndarray]]:
        if not self.code_names:
            return [{} for _ in range(rows)]  # the style is in the model's weights
        given = [n for n in self.code_names if n in request]
        if "style_id" in request:
            if given:
                raise InputError("send a `style_id` or the style code tensors, not both")
            codes = []
            for value in request["style_id"]:
                style_id = _text(value)
                code = self.stylizer.cached_code(style_id)
                if code is None:
                    bank = self.stylizer.bundle.style_bank.names
                    raise InputError(
                        f"unknown style_id {style_id[:16]}…: upload the style to the _style "
                        "model first"
                        + (f", or name a bank style ({', '.join(bank)})" if bank else "")
                    )
                codes.append(code)
            return codes
        if len(given) != len(self.code_names):
            raise InputError(f"send a `style_id`, or all of {', '.join(self.code_names)}")
        return [
            {n: np.asarray(request[n][i : i + 1], np.float32) for n in self.code_names}
            for i in range(rows)
        ]

    def _option(self, request, name: str, default, rows: int) -> list:
        if name not in request:
            return [default] * rows
        return [_scalar(row) for row in request[name]]

    @_refusing
    def __call__(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict]:
        jobs: list[list[Job]] = []
        formats: list[list[str]] = []
        for request in requests:  # decode and check all; stylize_batch checks α and size first
            rows = _rows(request)
            images = _images(request, self.max_pixels, "content")
            codes = self._codes(request, rows)
            alphas = self._option(request, "alpha", 1.0, rows)
            keep = self._option(request, "preserve_color", False, rows)
            default_format = "png" if "pixels" in request else "jpg"
            fmts = [_text(f).lower() for f in self._option(request, "format", default_format, rows)]
            for f in fmts:
                if f not in FORMATS:
                    raise InputError(f"format must be one of {', '.join(FORMATS)}, got {f!r}")
            jobs.append(
                [Job(i, c, float(a), bool(k)) for i, c, a, k in zip(images, codes, alphas, keep)]
            )
            formats.append(fmts)
        flat = [job for group in jobs for job in group]
        results = iter(self.stylizer.stylize_batch(flat, self.max_batch))
        responses = []
        for request, group, fmts in zip(requests, jobs, formats):
            done = [next(results) for _ in group]
            responses.append(self._response(request, done, fmts))
        return responses

    @staticmethod
    def _response(request, done: list[im.Image], fmts: list[str]) -> dict[str, np.ndarray]:
        wanted = getattr(request, "requested_output_names", None) or ("image", "pixels")
        out: dict[str, np.ndarray] = {}
        if "image" in wanted:
            out["image"] = np.array(
                [[im.encode(img, FORMATS[f])] for img, f in zip(done, fmts)], dtype=object
            )
        if "pixels" in wanted:
            if len({img.rgb.shape for img in done}) != 1:
                raise InputError("the images of one request differ in size: ask for `image` only")
            out["pixels"] = np.stack([im.to_uint8(img.rgb) for img in done])
        return out
