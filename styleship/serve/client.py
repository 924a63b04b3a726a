"""A styleship client over Triton's HTTP or gRPC protocol (`tritonclient`).

`Client("http://localhost:8000", "stvae-demo")` uploads a style once
(`upload_style` -> style id, cached server-side) and then stylizes content
files by that id. The URL scheme picks the protocol: http:// or grpc://.
Triton's errors arrive as text that may hold a server-side traceback; only
its last line, the reason, is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from styleship.errors import InputError, StyleshipError


class ServerError(StyleshipError):
    """The server refused or failed a request; the message is Triton's reason."""


def reason(exc: Exception) -> str:
    """The reason in a Triton error, without the server-side traceback around it."""
    text = str(exc).strip()
    refused = re.findall(r"BadRequest: (.+)", text)
    if refused:
        return refused[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@dataclass(frozen=True)
class Endpoint:
    protocol: str  # "http" or "grpc"
    address: str  # host:port, as tritonclient takes it

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        for scheme in ("http", "grpc"):
            if url.startswith(f"{scheme}://"):
                return cls(scheme, url.removeprefix(f"{scheme}://").rstrip("/"))
        if url.startswith("https://"):
            raise InputError("TLS is not supported by this client; use http:// or grpc://")
        raise InputError(f"server URL must start with http:// or grpc://, got {url!r}")


def _style_input(style_id: str | None) -> dict[str, np.ndarray]:
    return {} if style_id is None else {"style_id": np.array([[style_id.encode()]], dtype=object)}


class Client:
    """Stylize through a running `styleship serve` (or any Triton with the same models)."""

    def __init__(self, url: str, model: str | None, timeout_s: float = 60.0) -> None:
        """`model` None: the one bundle the server serves (an error if it serves several)."""
        self.endpoint = Endpoint.parse(url)
        self.timeout_s = timeout_s
        if self.endpoint.protocol == "http":
            import tritonclient.http as tc

            self._client = tc.InferenceServerClient(
                self.endpoint.address, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            import tritonclient.grpc as tc

            self._client = tc.InferenceServerClient(self.endpoint.address)
        self._tc = tc
        self.model = model if model is not None else self._only_model()

    def served_models(self) -> list[str]:
        """The stylize models the server has loaded: one per bundle (its `_style` twin left out).

        Read from the statistics of all models: PyTriton restricts Triton's repository
        index API to callers holding its access token, but not the statistics.
        """
        try:
            if self.endpoint.protocol == "http":
                stats = self._client.get_inference_statistics()
            else:
                stats = self._client.get_inference_statistics(as_json=True)
        except Exception as exc:  # connection refused, timeouts, Triton errors
            address = self.endpoint.address
            raise ServerError(f"cannot list the models at {address}: {reason(exc)}") from exc
        names = {m["name"] for m in stats.get("model_stats", [])}
        return sorted(
            n for n in names if not (n.endswith("_style") and n.removesuffix("_style") in names)
        )

    def _only_model(self) -> str:
        models = self.served_models()
        if len(models) != 1:
            served = ", ".join(models) or "none"
            raise InputError(f"the server serves {len(models)} models ({served}); pick one with -m")
        return models[0]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ready(self) -> bool:
        """True when the server is up and this bundle's stylize model is loaded."""
        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model))
        except Exception:  # connection refused and the like: simply not ready
            return False

    def takes_style(self) -> bool:
        """Whether the server has `<model>_style` (wrapped models have their style built in)."""
        try:
            return bool(self._client.is_model_ready(f"{self.model}_style"))
        except Exception:  # an unreachable server raises; the caller's next request reports it
            return False

    def _input(self, name: str, value: np.ndarray):
        from tritonclient.utils import np_to_triton_dtype

        tensor = self._tc.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        return tensor

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict:
        """One request; returns the named outputs, or raises ServerError with Triton's reason."""
        requested = [
            self._tc.InferRequestedOutput(n, binary_data=True)
            if self.endpoint.protocol == "http"
            else self._tc.InferRequestedOutput(n)
            for n in outputs
        ]
        kwargs = (
            {"timeout": int(self.timeout_s * 1e6)}
            if self.endpoint.protocol == "http"
            else {"client_timeout": self.timeout_s}
        )
        try:
            result = self._client.infer(
                model, [self._input(k, v) for k, v in inputs.items()], outputs=requested, **kwargs
            )
        except Exception as exc:  # tritonclient raises InferenceServerException and socket errors
            raise ServerError(reason(exc)) from exc
        return {n: result.as_numpy(n) for n in outputs}

    def upload_style(self, style: bytes) -> str:
        """Send a style image once; the server keeps its code under the returned id."""
        out = self.infer(
            f"{self.model}_style", {"image": np.array([[style]], dtype=object)}, ["style_id"]
        )
        value = out["style_id"].reshape(-1)[0]
        return value.decode() if isinstance(value, bytes) else str(value)

    def stylize(
        self,
        content: bytes,
        style_id: str | None,
        alpha: float = 1.0,
        preserve_color: bool = False,
        fmt: str = "jpg",
    ) -> bytes:
        """Stylize one encoded image by style id (None for wrapped models); returns the image."""
        inputs = {
            "image": np.array([[content]], dtype=object),
            **_style_input(style_id),
            "alpha": np.array([[alpha]], np.float32),
            "preserve_color": np.array([[preserve_color]], np.bool_),
            "format": np.array([[fmt.encode()]], dtype=object),
        }
        value = self.infer(self.model, inputs, ["image"])["image"].reshape(-1)[0]
        return bytes(value)

    def stylize_pixels(
        self, rgb: np.ndarray, style_id: str | None, alpha: float = 1.0
    ) -> np.ndarray:
        """Stylize a uint8 RGB array (H, W, 3); returns uint8 RGB of the same size."""
        inputs = {
            "pixels": np.ascontiguousarray(rgb[None], np.uint8),
            **_style_input(style_id),
            "alpha": np.array([[alpha]], np.float32),
        }
        return self.infer(self.model, inputs, ["pixels"])["pixels"][0]

    def statistics(self) -> dict:
        """Triton's statistics for the stylize model: batch sizes, queue and compute times."""
        if self.endpoint.protocol == "http":
            return self._client.get_inference_statistics(self.model)
        return self._client.get_inference_statistics(self.model, as_json=True)
