"""Run the work on Ray: a Ray Data pipeline over the paths, a pool of `StylizeWorker` actors.

The dataset is built from the list of (input, output) paths and each actor
reads its files itself. Ray Data's own file readers fail the whole dataset on
one unreadable file; here an unreadable file is that file's error row.
Inputs and outputs must therefore be reachable at the same paths from every
node (one machine, or a shared filesystem on a cluster).

Pool size: one actor per GPU when the cluster has GPUs and the backend can use
them; otherwise `cpus // threads` actors of `threads` cores each, pinned to
disjoint cores of their node, so that engines that size their thread pools
from the CPU affinity do not oversubscribe the machine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from styleship._lazy import require
from styleship.batch.table import COLUMNS, Row
from styleship.errors import BackendUnavailable, InputError, first_line

GPU_BACKENDS = {None, "ort-cuda", "ort-trt", "tensorrt"}  # None: the best installed, maybe CUDA


@dataclass(frozen=True)
class Pool:
    actors: int
    threads: int | None  # cores per actor (None on GPUs)
    gpus: int  # per actor: 0 or 1
    cluster: dict  # what Ray offered: CPU and GPU counts


def size_pool(
    resources: dict, backend: str | None, actors: int | None, threads: int | None
) -> Pool:
    """How many actors, and what each asks Ray for, from what the cluster offers."""
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = int(resources.get("GPU", 0))
    offered = {"CPU": cpus, "GPU": gpus}
    if gpus and backend in GPU_BACKENDS and not threads:
        return Pool(actors or gpus, None, 1, offered)
    threads = threads or min(2, cpus)
    if threads > cpus:
        raise InputError(f"--threads {threads} is more than the {cpus} CPUs Ray offers")
    return Pool(actors or max(1, cpus // threads), threads, 0, offered)


def _ledger(ray):
    """A small actor that hands each stylizing actor its own cores on its node."""

    @ray.remote(num_cpus=0)
    class CoreLedger:
        def __init__(self) -> None:
            self.taken: dict[str, set[int]] = {}

        def claim(self, node: str, available: list[int], want: int) -> list[int]:
            taken = self.taken.setdefault(node, set())
            free = [c for c in available if c not in taken]
            if len(free) < want:  # more actors than cores: share, as unpinned actors would
                free = sorted(available, key=lambda c: c in taken)
            picked = free[:want]
            taken.update(picked)
            return picked

    return CoreLedger.remote()


def _start(ray, address: str | None) -> None:
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise BackendUnavailable(f"cannot start {where}: {first_line(exc)}") from None
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def run_on_ray(
    work: list[tuple[Path, Path]],
    worker_kwargs: dict,
    *,
    address: str | None = None,
    actors: int | None = None,
    threads: int | None = None,
    batch_size: int = 8,
    on_row: Callable[[Row], None],
    on_pool: Callable[[Pool], None] | None = None,
) -> dict:
    """Stylize `work` (input, output) on Ray; `on_row` gets each row as it finishes."""
    ray = require("ray", "ray")
    require("ray.data", "ray")
    from styleship.batch.worker import StylizeWorker

    started = time.perf_counter()
    joined = ray.is_initialized()
    if not joined:
        _start(ray, address)
    start_s = time.perf_counter() - started
    try:
        pool = size_pool(ray.cluster_resources(), worker_kwargs.get("backend"), actors, threads)
        if on_pool:
            on_pool(pool)
        ledger = _ledger(ray) if pool.threads else None
        items = [{"input": str(i), "output": str(o)} for i, o in work]
        blocks = max(1, min(len(items), pool.actors * 4))
        dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            StylizeWorker,
            fn_constructor_kwargs={**worker_kwargs, "ledger": ledger, "threads": pool.threads},
            batch_size=batch_size,
            concurrency=pool.actors,
            num_cpus=pool.threads or 1,
            num_gpus=pool.gpus,
        )
        run_started = time.perf_counter()
        try:
            for record in dataset.iter_rows():
                on_row(Row(**{c: record[c] for c in COLUMNS}))
        except ray.exceptions.RayError as exc:
            raise BackendUnavailable(f"the Ray job failed: {_reason(exc)}") from None
        run_s = time.perf_counter() - run_started
    finally:
        if not joined:
            ray.shutdown()
    return {
        "actors": pool.actors,
        "threads_per_actor": pool.threads,
        "gpus_per_actor": pool.gpus,
        "cluster": pool.cluster,
        "ray_start_s": round(start_s, 2),
        "run_s": round(run_s, 2),
    }


def _reason(exc: Exception) -> str:
    """The innermost message of a Ray error (actor start-up errors arrive wrapped)."""
    cause = getattr(exc, "cause", None) or exc.__cause__
    text = str(cause or exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    ours = [line for line in lines if "Error: " in line or "error: " in line]
    return (ours[-1] if ours else lines[-1] if lines else type(exc).__name__)[:500]
