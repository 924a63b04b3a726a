"""`styleship loadtest`: closed-loop load on a running server, one level of concurrency at a time.

At each level N, N client threads (one connection each) send stylize
requests back to back for `duration` seconds or `max_requests` requests,
whichever comes first; a request's latency is send-to-response. Throughput
is completed requests per second of the level's wall time. The server's
own statistics (Triton's batch counters) say how many requests each
executed batch held, which is the effect of dynamic batching. Load goes to
loopback addresses only unless the caller allows otherwise.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from styleship import _atomic
from styleship.bench.markdown import fmt
from styleship.bench.timing import Stats
from styleship.errors import InputError
from styleship.serve.client import Client, Endpoint, ServerError

FORMAT = "styleship-loadtest"
MAX_CONCURRENCY = 256
MAX_DURATION_S = 600.0


@dataclass
class Level:
    """One concurrency level's outcome."""

    concurrency: int
    requests: int
    errors: int
    wall_s: float
    throughput_rps: float
    latency: Stats | None
    mean_batch: float | None  # requests per executed batch on the server, this level only
    error_examples: list[str]


def check_loopback(url: str) -> None:
    """Refuse to load anything but this machine unless asked: a load test is not a probe."""
    host = Endpoint.parse(url).address.rsplit(":", 1)[0].strip("[]")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve {host!r}: {exc}") from exc
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise InputError(f"{host} is not a loopback address; pass --allow-remote to load it")


def synthetic_image(size: int, seed: int) -> bytes:
    """A deterministic photo-like JPEG (smooth colour fields plus texture) for load tests."""
    rng = np.random.default_rng(seed)
    low = rng.random((6, 6, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 0.04, (size, size, 3)).astype(np.float32)
    bgr = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def _batch_counts(stats: dict, model: str) -> dict[int, int]:
    """{batch size: executions} from Triton's statistics (HTTP or gRPC JSON form)."""
    counts: dict[int, int] = {}
    for entry in stats.get("model_stats", []):
        if entry.get("name") != model:
            continue
        for b in entry.get("batch_stats", []):
            size = int(b.get("batch_size", 0))
            compute = b.get("compute_infer", {})
            counts[size] = counts.get(size, 0) + int(compute.get("count", 0))
    return counts


def _mean_batch(before: dict[int, int], after: dict[int, int]) -> float | None:
    delta = {b: after.get(b, 0) - before.get(b, 0) for b in after}
    runs = sum(delta.values())
    return sum(b * n for b, n in delta.items()) / runs if runs else None


def run_level(
    url: str,
    model: str,
    style_id: str | None,
    content: bytes,
    concurrency: int,
    duration_s: float,
    max_requests: int,
) -> Level:
    """N threads, each with its own connection, sending until the time or count runs out."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = 0
    deadline = time.perf_counter() + duration_s

    def take() -> bool:
        nonlocal issued
        with lock:
            if issued >= max_requests or time.perf_counter() >= deadline:
                return False
            issued += 1
            return True

    def worker() -> None:
        with Client(url, model) as client:
            while take():
                t0 = time.perf_counter()
                try:
                    client.stylize(content, style_id)
                except ServerError as exc:
                    with lock:
                        errors.append(str(exc))
                    continue
                with lock:
                    latencies.append((time.perf_counter() - t0) * 1e3)

    with Client(url, model) as probe:
        before = _batch_counts(probe.statistics(), model)
        start = time.perf_counter()
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        after = _batch_counts(probe.statistics(), model)
    return Level(
        concurrency=concurrency,
        requests=len(latencies) + len(errors),
        errors=len(errors),
        wall_s=round(wall, 3),
        throughput_rps=round(len(latencies) / wall, 3) if wall > 0 else 0.0,
        latency=Stats.from_samples(latencies) if latencies else None,
        mean_batch=_mean_batch(before, after),
        error_examples=sorted(set(errors))[:3],
    )


def run_loadtest(
    url: str,
    model: str,
    content: bytes,
    style: bytes,
    levels: Sequence[int],
    duration_s: float,
    max_requests: int = 100_000,
    warmup: int = 2,
    on_level: Callable[[Level], None] | None = None,
) -> dict:
    """Every level in turn after a short warm-up; returns the JSON-ready results."""
    if not levels or any(not 1 <= n <= MAX_CONCURRENCY for n in levels):
        raise InputError(f"concurrency levels must be between 1 and {MAX_CONCURRENCY}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise InputError(f"duration must be in (0, {MAX_DURATION_S:g}] seconds")
    with Client(url, model) as client:
        if not client.ready():
            raise InputError(f"no ready model {model!r} at {url}")
        style_id = client.upload_style(style) if client.takes_style() else None
        for _ in range(warmup):
            client.stylize(content, style_id)
    results = []
    for n in levels:
        level = run_level(url, model, style_id, content, n, duration_s, max_requests)
        results.append(level)
        if on_level:
            on_level(level)
    height, width = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    return {
        "format": FORMAT,
        "format_version": 1,
        "url": url,
        "model": model,
        "content_size": [width, height],
        "duration_s": duration_s,
        "levels": [asdict(level) for level in results],
    }


def render_markdown(results: dict) -> str:
    w, h = results["content_size"]
    local = results.get("in_process")
    lines = [
        f"# Load test: `{results['model']}` at {results['url']}",
        "",
        f"Content {w}×{h} JPEG, style by id (cached on the server), closed loop, "
        f"{results['duration_s']:g} s per level. Latency is client send to response.",
        "",
        "| concurrency | requests | errors | throughput req/s | p50 ms | p90 ms | p99 ms "
        "| mean batch |" + (" floor p50 / p99 ms |" if local else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if local else ""),
    ]
    floors = {row["concurrency"]: row for row in (local or {}).get("floor", [])}
    for lv in results["levels"]:
        lat = lv["latency"] or {}
        batch = f"{lv['mean_batch']:.2f}" if lv["mean_batch"] else "-"
        row = floors.get(lv["concurrency"], {})
        lines.append(
            f"| {lv['concurrency']} | {lv['requests']} | {lv['errors']} | "
            f"{lv['throughput_rps']:.2f} | {fmt(lat.get('p50_ms'))} | {fmt(lat.get('p90_ms'))} | "
            f"{fmt(lat.get('p99_ms'))} | {batch} |"
            + (f" {fmt(row.get('p50_ms'))} / {fmt(row.get('p99_ms'))} |" if local else "")
        )
    if local:
        lines += [
            "",
            f"In-process `Stylizer` on the same content (decode + stylize + encode, "
            f"{local['calls']} calls back to back): p50 {fmt(local['p50_ms'])} ms per image, "
            f"{local['images_per_s']:.2f} images/s one at a time. Floor: the sum of N "
            "consecutive in-process calls, what N clients would wait behind one engine if "
            "the server added nothing; its p99 is this machine's own slow spells.",
        ]
    examples = sorted({e for lv in results["levels"] for e in lv["error_examples"]})
    if examples:
        lines += ["", "Errors seen:", *[f"- {e}" for e in examples]]
    return "\n".join(lines) + "\n"


def write_plot(results: dict, path: Path) -> Path:
    """Latency percentiles and throughput against concurrency."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [lv for lv in results["levels"] if lv["latency"]]
    xs = [lv["concurrency"] for lv in levels]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key, style in (("p50_ms", "o-"), ("p99_ms", "s--")):
        ax.plot(xs, [lv["latency"][key] for lv in levels], style, label=key.replace("_ms", ""))
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("latency (ms)")
    ax2 = ax.twinx()
    ax2.plot(xs, [lv["throughput_rps"] for lv in levels], "^-", color="tab:green", label="req/s")
    ax2.set_ylabel("throughput (req/s)")
    ax2.set_ylim(bottom=0)
    ax.legend(loc="upper left")
    ax2.legend(loc="lower right")
    ax.set_title(f"{results['model']}: latency and throughput vs concurrency")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return _atomic.write_bytes(path, buf.getvalue())


def write_reports(results: dict, out_dir: Path) -> list[Path]:
    """loadtest.json, loadtest.md and loadtest.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        _atomic.write_bytes(out_dir / "loadtest.json", json.dumps(results, indent=1).encode()),
        _atomic.write_bytes(out_dir / "loadtest.md", render_markdown(results).encode()),
    ]
    if any(lv["latency"] for lv in results["levels"]):
        paths.append(write_plot(results, out_dir / "loadtest.png"))
    return paths


def floor(samples_ms: Sequence[float], levels: Sequence[int]) -> list[dict]:
    """Per level N: p50 and p99 of the sum of N consecutive in-process calls.

    In a closed loop with N clients and one engine, a request waits for the
    N - 1 ahead of it, so a server that added nothing would answer in the
    time of N calls. Summing consecutive calls keeps the slow spells of the
    machine itself in the distribution: this is the least p99 that level
    could show on this machine. p99 needs 100 windows.
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    rows = []
    for n in levels:
        if x.size < n:
            continue
        sums = np.convolve(x, np.ones(n), "valid")
        stats = Stats.from_samples(sums, p99_min_samples=100)
        rows.append({"concurrency": n, "p50_ms": stats.p50_ms, "p99_ms": stats.p99_ms})
    return rows


def in_process(
    bundle: str | Path,
    content: bytes,
    style: bytes,
    backend: str | None,
    levels: Sequence[int],
    duration_s: float,
) -> dict:
    """The same work without a server, back to back for `duration_s`: decode, stylize with
    a cached style, encode. Per image p50 and rate, and each level's floor (see `floor`)."""
    from styleship.runtime import image as im
    from styleship.runtime.stylizer import Stylizer

    with Stylizer(bundle, backend, cache_dir=None) as stylizer:
        styled = stylizer.bundle.has_style_input
        if styled:
            stylizer.style_code(style)

        def once() -> None:
            im.encode(stylizer.stylize(content, style if styled else None), ".jpg")

        once()
        samples = []
        deadline = time.perf_counter() + duration_s
        while not samples or time.perf_counter() < deadline:
            t0 = time.perf_counter()
            once()
            samples.append((time.perf_counter() - t0) * 1e3)
    p50 = Stats.from_samples(samples).p50_ms
    return {
        "calls": len(samples),
        "p50_ms": p50,
        "images_per_s": round(len(samples) * 1e3 / sum(samples), 3),
        "floor": floor(samples, levels),
    }
