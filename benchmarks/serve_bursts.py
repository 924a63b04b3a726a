"""Bursts against `styleship serve`: N requests sent at once, then silence.

A closed-loop load test keeps requests arriving, and each arrival wakes
Triton's batcher. A burst that ends does not: the requests still queued must
be handed to the instance when it frees. This times that case, for the
default server and for one with a queue bound and timeout (the defaults
before December 6), each server started fresh. Per burst: the last request's
latency (client send to response) and the mean time its requests spent in
Triton's queue (Triton's statistics). Writes serve_bursts.{json,md}.

    python benchmarks/serve_bursts.py --out benchmarks/results/cpu/serve/bursts
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from styleship.runtime.choice import machine
from styleship.serve.client import Client
from styleship.serve.loadtest import synthetic_image

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "default": [],
    "--max-queue 64 --timeout-ms 30000": ["--max-queue", "64", "--timeout-ms", "30000"],
}


def _queue_stats(client: Client, model: str) -> tuple[int, int]:
    stats = next(m for m in client.statistics()["model_stats"] if m["name"] == model)
    queue = stats["inference_stats"]["queue"]
    return int(queue["count"]), int(queue["ns"])


def _burst(url: str, model: str, content: bytes, style_id: str, n: int) -> list[float]:
    """n requests released together, one thread and connection each; their latencies (ms)."""
    latencies = [0.0] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        with Client(url, model) as c:  # a client's HTTP stack belongs to the thread that made it
            start.wait()
            t0 = time.perf_counter()
            c.stylize(content, style_id)
            latencies[i] = (time.perf_counter() - t0) * 1e3

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def _wait_ready(url: str, model: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 180
    while True:
        try:
            with Client(url, model) as c:
                if c.ready():
                    return
        except Exception:  # not listening yet
            pass
        if server.poll() is not None or time.time() > deadline:
            raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def run_variant(bundle: Path, model: str, flags: list[str], size: int, n: int, bursts: int):
    """Start a server with `flags`, send `bursts` bursts of `n`; one row per burst."""
    port = 18710
    work = Path(tempfile.mkdtemp(prefix="styleship-bursts-"))
    env = {**os.environ, "STYLESHIP_CACHE": str(work / "cache")}
    cmd = [sys.executable, "-m", "styleship", "serve", str(bundle), "--http-port", str(port)]
    cmd += ["--grpc-port", str(port + 1), "--metrics-port", str(port + 2), *flags]
    with open(work / "serve.log", "w") as log:
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, model, server, work / "serve.log")
        content = synthetic_image(size, seed=1)
        rows = []
        with Client(url, model) as probe:
            style_id = probe.upload_style(synthetic_image(256, seed=2))
            for _ in range(5):
                probe.stylize(content, style_id)
            for _ in range(bursts):
                before = _queue_stats(probe, model)
                latencies = _burst(url, model, content, style_id, n)
                after = _queue_stats(probe, model)
                queued = (after[1] - before[1]) / max(1, after[0] - before[0]) / 1e6
                rows.append(
                    {"last_ms": round(max(latencies), 1), "mean_queue_ms": round(queued, 1)}
                )
                time.sleep(0.3)
        return rows
    finally:
        server.terminate()
        server.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build/serve-bursts")
    ap.add_argument("--bundle", type=Path, default=ROOT / "build/whole-process/magenta")
    ap.add_argument("--model", default="magenta")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--bursts", type=int, default=12)
    args = ap.parse_args()
    results = {
        "machine": machine(),
        "bundle": args.bundle.name,
        "size": args.size,
        "clients": args.clients,
        "variants": {
            name: run_variant(args.bundle, args.model, flags, args.size, args.clients, args.bursts)
            for name, flags in VARIANTS.items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_bursts.json").write_text(json.dumps(results, indent=1))
    lines = [
        "# Bursts against `styleship serve`",
        "",
        f"`{args.bundle.name}`, {args.size}² JPEG, bursts of {args.clients} requests sent at "
        f"once, {args.bursts} bursts 0.3 s apart, each server started fresh.",
        "",
        "| server | last request of each burst, ms | mean time in Triton's queue per burst, ms "
        "| bursts queued ≥ 300 ms on average |",
        "|---|---|---|---|",
    ]
    for name, rows in results["variants"].items():
        stalled = sum(r["mean_queue_ms"] >= 300 for r in rows)
        last = ", ".join(str(round(r["last_ms"])) for r in rows)
        queued = ", ".join(str(round(r["mean_queue_ms"])) for r in rows)
        lines.append(f"| {name} | {last} | {queued} | {stalled} of {len(rows)} |")
    (args.out / "serve_bursts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
