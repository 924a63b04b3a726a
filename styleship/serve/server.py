"""`styleship serve`: bundles behind NVIDIA Triton Inference Server, through PyTriton.

PyTriton runs the real `tritonserver` binary from its wheel; Triton does the
HTTP/gRPC front ends, dynamic batching, the bounded queue, health and
Prometheus metrics, and calls our Python models (serve/models.py) with
batched requests. Two interpreter pitfalls are handled here so users never
meet them: the Python-backend stub must load this interpreter's own
libpython (pytriton issue #51), and it returns empty outputs under NumPy 2.
Neither torch nor pytriton is imported until a server starts.
"""

from __future__ import annotations

import os
import signal
import sysconfig
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from styleship.errors import BackendUnavailable, InputError
from styleship.export.triton import model_name
from styleship.runtime.bundle import Bundle
from styleship.runtime.style_cache import StyleCache, default_cache_dir
from styleship.runtime.stylizer import Stylizer
from styleship.serve.models import Port, StyleModel, StylizeModel, style_ports, stylize_ports


@dataclass
class ServeConfig:
    """What `styleship serve` exposes on its command line."""

    backend: str | None = None  # None: the fastest cleared pair here, as for `stylize`
    precision: str | None = None
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 16
    max_queue_delay_us: int = 5000
    # auto: batch only where the chosen engine runs batches faster per image (measured
    # once, runtime/choice.py); on: always; off: requests run one at a time.
    batching: str = "auto"
    max_queue: int = 0  # requests waiting beyond this are rejected at once; 0: no bound
    timeout_ms: int = 0  # a request still queued after this is rejected; 0: never
    instances: int = 1
    max_pixels: int = 16_000_000
    exit_timeout_s: int = 30  # in-flight requests get this long to finish on shutdown
    cache_dir: Path | None = field(default_factory=default_cache_dir)
    log_file: Path | None = None  # Triton's own log; None prints it (with --verbose) or drops it
    verbose: bool = False

    @property
    def has_queue_policy(self) -> bool:
        """Whether Triton gets a queue policy: only for a bound or a timeout (_queue_policy)."""
        return bool(self.max_queue or self.timeout_ms)


def check_environment() -> None:
    """Fail early, in one line, where PyTriton cannot work."""
    try:
        import pytriton  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable("serving needs PyTriton: pip install 'styleship[serve]'") from exc
    if int(np.__version__.split(".")[0]) >= 2:
        raise BackendUnavailable(
            f"PyTriton's Python backend returns empty outputs with NumPy {np.__version__}; "
            "serve from an environment with numpy<2 (pip install 'styleship[serve]' picks one)"
        )


def _stub_library_path() -> None:
    """Put this interpreter's libpython first for the Python-backend stub Triton spawns.

    The stub links `libpython3.X.so`; found on the system path, it can be an
    older build than this interpreter's standard library, and model load
    fails with `'_thread.RLock' object has no attribute '_recursion_count'`.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and Path(libdir).is_dir():
        rest = os.environ.get("LD_LIBRARY_PATH", "")
        parts = [p for p in rest.split(":") if p and p != libdir]
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *parts])


def _tensors(ports: Sequence[Port]):
    from pytriton.model_config import Tensor

    return [Tensor(name=p.name, dtype=p.dtype, shape=p.dims, optional=p.optional) for p in ports]


def _model_config(config: ServeConfig, batched: bool):
    """Triton's batcher: where batches help it waits up to the queue delay to fill one;
    elsewhere it hands over what is queued as soon as the instance is free."""
    from pytriton.model_config import DynamicBatcher, ModelConfig

    # No preferred batch sizes: with them and no queue delay, Triton left requests queued
    # for about 400 ms whenever no new request arrived to wake it (traced on Magenta at
    # 512²: every time clients stopped sending, docs/benchmarks.md). Unbatched engines get the
    # requests queued when the instance frees, run one after another (fewer, larger calls
    # save the server's per-call overhead under load). One image per request kept the
    # queue strictly in order but lost throughput at 32 clients and raised their p99.
    batcher = DynamicBatcher(
        max_queue_delay_microseconds=config.max_queue_delay_us if batched else 0,
        default_queue_policy=_queue_policy(config),
    )
    return ModelConfig(batching=True, max_batch_size=config.max_batch, batcher=batcher)


def _queue_policy(config: ServeConfig):
    """Triton's queue bound and timeout, only where asked for. The Triton in PyTriton 0.7.0
    stops handing queued requests to a free instance at once when a queue policy is set:
    they wait for its 500 ms poll (triton-inference-server/server#8870). Bursts of 8 at
    512² on Magenta: with the policy 5 of 12 had requests queued 470-484 ms; without, none."""
    if not config.has_queue_policy:
        return None
    from pytriton.model_config import QueuePolicy, TimeoutAction

    return QueuePolicy(
        timeout_action=TimeoutAction.REJECT,
        default_timeout_microseconds=config.timeout_ms * 1000,
        allow_timeout_override=True,
        max_queue_size=config.max_queue,
    )


def queue_line(config: ServeConfig) -> str:
    """What the serve banner says of the queue."""
    if not config.has_queue_policy:
        return "unbounded, no timeout (--max-queue/--timeout-ms set them)"
    parts = [f"at most {config.max_queue} queued" if config.max_queue else "unbounded"]
    parts.append(f"rejected after {config.timeout_ms} ms" if config.timeout_ms else "no timeout")
    return ", ".join(parts) + "; Triton may then hold queued requests up to 0.5 s"


@dataclass
class Served:
    """One bundle as served: its Triton model names and the callables behind them."""

    name: str
    bundle: Bundle
    style: list[Callable]
    stylize: list[Callable]
    stylizers: list[Stylizer]
    batched: bool = True  # whether engine runs take several requests at once
    why_batching: str = ""

    @property
    def styles(self) -> tuple[str, ...]:
        """The bank's style names: ready `style_id`s for `<name>`, no upload needed."""
        return self.bundle.style_bank.names


def load_models(bundles: Sequence[str | Path], config: ServeConfig) -> list[Served]:
    """Open every bundle once per instance (each instance owns its engine sessions)."""
    served: list[Served] = []
    names: set[str] = set()
    try:
        for path in bundles:
            bundle = Bundle.load(path)
            name = model_name(bundle)
            if name in names:
                raise InputError(f"two bundles are both named {name!r}; rename one")
            names.add(name)
            cache = StyleCache(bundle.hash, config.cache_dir)  # shared: any instance finds an id
            stylizers = []
            entry = Served(name, bundle, [], [], stylizers)
            served.append(entry)
            for _ in range(config.instances):
                s = Stylizer(bundle, config.backend, precision=config.precision, cache_dir=None)
                s.check_engines(config.max_batch)  # engine profiles vs Triton's batches, now
                s.cache = cache
                stylizers.append(s)
            entry.batched, entry.why_batching = _batching(stylizers[0], config)
            engine_batch = config.max_batch if entry.batched else 1
            for s in stylizers:
                if bundle.has_style_input:
                    entry.style.append(StyleModel(s, config.max_pixels))
                entry.stylize.append(StylizeModel(s, config.max_pixels, engine_batch))
    except BaseException:
        close_models(served)
        raise
    return served


def _batching(stylizer: Stylizer, config: ServeConfig) -> tuple[bool, str]:
    """(batch engine runs?, why): measured for the chosen engine unless forced."""
    if config.batching not in ("auto", "on", "off"):
        raise InputError(f"batching must be auto, on or off, not {config.batching!r}")
    if config.batching != "auto" or config.max_batch == 1:
        on = config.batching == "on" and config.max_batch > 1
        return on, f"batching {'on' if on else 'off'} as asked"
    from styleship.runtime.choice import batching

    record = batching(stylizer.bundle, stylizer.choice)
    if "gain" not in record:
        return False, f"off: {record.get('why', 'not measured')}"
    verdict = "on" if record["helps"] else "off"
    return record["helps"], (
        f"{verdict}: batch {record['batch']} runs {record['per_image_ms']:g} ms per image "
        f"against {record['batch1_ms']:g} ms one at a time on {stylizer.backend_name} "
        f"{stylizer.precision}"
    )


def close_models(served: Sequence[Served]) -> None:
    for entry in served:
        for s in entry.stylizers:
            s.close()


def _triton_config(config: ServeConfig):
    from pytriton.triton import TritonConfig

    return TritonConfig(
        http_address=config.host,
        http_port=config.http_port,
        grpc_address=config.host,
        grpc_port=config.grpc_port,
        metrics_address=config.host,
        metrics_port=config.metrics_port,
        exit_timeout_secs=config.exit_timeout_s,
        log_verbose=1 if config.verbose else 0,
        log_file=config.log_file,
    )


class Server:
    """A running Triton with the bundles' models bound; `with Server(...) as s: s.wait()`."""

    def __init__(self, bundles: Sequence[str | Path], config: ServeConfig) -> None:
        check_environment()
        if not bundles:
            raise InputError("give at least one bundle to serve")
        self.config = config
        self.served = load_models(bundles, config)
        self._triton = None

    @property
    def model_names(self) -> list[str]:
        return [n for e in self.served for n in ([f"{e.name}_style"] if e.style else []) + [e.name]]

    def start(self) -> None:
        """Start tritonserver and load the models; returns once they are ready."""
        from pytriton.triton import Triton, TritonSecurityConfig

        _stub_library_path()
        # PyTriton guards the admin APIs with a random token; statistics stay open because
        # they are how an operator (and `loadtest`) sees batch sizes and queue times.
        security = TritonSecurityConfig(
            restricted_endpoints=["shared-memory", "model-repository", "trace", "logging"]
        )
        self._triton = Triton(config=_triton_config(self.config), security_config=security)
        try:
            for entry in self.served:
                if entry.style:  # wrapped models have their style built in: no _style model
                    ins, outs = style_ports(entry.bundle)
                    self._triton.bind(
                        model_name=f"{entry.name}_style",
                        infer_func=entry.style,
                        inputs=_tensors(ins),
                        outputs=_tensors(outs),
                        config=_model_config(self.config, batched=False),
                        strict=False,
                    )
                ins, outs = stylize_ports(entry.bundle)
                self._triton.bind(
                    model_name=entry.name,
                    infer_func=entry.stylize,
                    inputs=_tensors(ins),
                    outputs=_tensors(outs),
                    config=_model_config(self.config, batched=entry.batched),
                    strict=False,
                )
            self._triton.run()
        except BaseException:
            self.stop()
            raise

    def wait(self) -> None:
        """Serve until SIGINT or SIGTERM; in-flight requests finish before Triton exits."""
        stop = threading.Event()
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, lambda *_: stop.set())
        try:
            while not stop.wait(1.0):
                if self._triton is None or not self._triton.is_alive():
                    raise BackendUnavailable("Triton exited unexpectedly (run with --verbose)")
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def stop(self) -> None:
        if self._triton is not None:
            self._triton.stop()
            self._triton = None
        close_models(self.served)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def urls(config: ServeConfig) -> dict[str, str]:
    """Where the server listens, for printing and for clients."""
    host = "localhost" if config.host in ("127.0.0.1", "0.0.0.0") else config.host
    return {
        "http": f"http://{host}:{config.http_port}",
        "grpc": f"grpc://{host}:{config.grpc_port}",
        "metrics": f"http://{host}:{config.metrics_port}/metrics",
    }
