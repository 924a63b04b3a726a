"""Serving: the served models in-process, then a real Triton (PyTriton) on loopback ports.

The server tests start `styleship serve` as a user would, on the shipped demo
bundle, and talk to it with tritonclient over HTTP and gRPC.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from conftest import ROOT, free_ports, run_cli

from styleship.runtime import image as im
from styleship.runtime.stylizer import Stylizer
from styleship.serve.client import Client, ServerError
from styleship.serve.models import BadRequest, StyleModel, StylizeModel

DEMO = ROOT / "assets" / "models" / "stvae-demo.stvae"
MODEL = "stvae-demo"
pytest.importorskip("pytriton", reason="serving tests need PyTriton (pip install '.[serve]')")


class ServerProcess:
    """`styleship serve` in a subprocess, waited on until both models are ready."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.http, self.grpc, self.metrics = free_ports(3)
        env = {**os.environ, "STYLESHIP_CACHE": str(tmp / "cache")}
        cmd = [sys.executable, "-m", "styleship", "serve", str(DEMO), "--backend", "ort-cpu"]
        cmd += ["--precision", "fp32"]
        cmd += ["--http-port", str(self.http), "--grpc-port", str(self.grpc)]
        cmd += ["--metrics-port", str(self.metrics), "--log-file", str(tmp / "triton.log"), *args]
        self.log = open(tmp / "serve.out", "w")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 180
        with Client(self.url("http"), MODEL) as c:
            while not c.ready():
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    pytest.fail(f"server did not start: {(tmp / 'serve.out').read_text()[-2000:]}")
                time.sleep(0.5)
        self.children = psutil.Process(self.proc.pid).children(recursive=True)

    def url(self, protocol: str) -> str:
        return f"{protocol}://127.0.0.1:{self.http if protocol == 'http' else self.grpc}"

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Batching forced on: these tests are about Triton's batches, whatever this CPU measures.
    srv = ServerProcess(
        tmp_path_factory.mktemp("serve"), "--max-queue-delay-us", "50000", "--batching", "on"
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def reference():
    with Stylizer(DEMO, "ort-cpu", precision="fp32", cache_dir=None) as s:
        yield s


def _concurrently(fn, n: int) -> None:
    """Run `fn` in n threads at once and wait for all of them."""
    threads = [threading.Thread(target=fn) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


def _huge_png_header() -> bytes:
    """A PNG whose header declares 100000×100000 pixels (the server must refuse it unread)."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


# -- the served models, called directly (no Triton) ------------------------------------------


def test_batched_requests_equal_one_at_a_time(reference, contents, styles):
    """Mixed sizes, styles and α in one Triton batch give what single stylize calls give."""
    style_model = StyleModel(reference, im.DEFAULT_MAX_PIXELS)
    model = StylizeModel(reference, im.DEFAULT_MAX_PIXELS, max_batch=8)
    ids = []
    for style in styles[:2]:
        (out,) = style_model([{"image": np.array([[_bytes(style)]], dtype=object)}])
        ids.append(out["style_id"][0, 0])
        assert out["style_mu"].shape == (1, 64)
    small = cv2.resize(cv2.imread(str(contents[1])), (96, 64))
    requests = [
        {
            "image": np.array([[_bytes(contents[0])]], dtype=object),
            "style_id": np.array([[ids[0]]]),
        },
        {
            "pixels": cv2.cvtColor(small, cv2.COLOR_BGR2RGB)[None],
            "style_id": np.array([[ids[1]]], dtype=object),
            "alpha": np.array([[0.5]], np.float32),
        },
        {
            "image": np.array([[_bytes(contents[0])]], dtype=object),
            "style_id": np.array([[ids[1]]]),
        },
    ]
    responses = model(requests)
    expected = [
        reference.stylize(contents[0], styles[0]),
        reference.stylize(
            im.Image(cv2.cvtColor(small, cv2.COLOR_BGR2RGB) / 255.0), styles[1], alpha=0.5
        ),
        reference.stylize(contents[0], styles[1]),
    ]
    for response, want in zip(responses, expected):
        got = response["pixels"][0].astype(int)
        assert got.shape == want.rgb.shape
        assert np.abs(got - im.to_uint8(want.rgb).astype(int)).max() <= 1


def test_model_refuses_bad_requests_with_one_line(reference):
    model = StylizeModel(reference, im.DEFAULT_MAX_PIXELS, max_batch=8)
    cases = {
        "unknown style_id": {
            "pixels": np.zeros((1, 32, 32, 3), np.uint8),
            "style_id": np.array([[b"ab"]]),
        },
        "exactly one of": {"style_id": np.array([[b"ab"]])},
        "alpha must be": {
            "pixels": np.zeros((1, 32, 32, 3), np.uint8),
            **{
                n: np.zeros((1, *s), np.float32)
                for n, s in (
                    ("style_mu", (64,)),
                    ("style_sigma", (64,)),
                    ("style_matrix", (16, 16)),
                )
            },
            "alpha": np.array([[3.0]], np.float32),
        },
    }
    for expected, request in cases.items():
        with pytest.raises(BadRequest, match=expected):
            model([request])


# -- a real server ---------------------------------------------------------------------------


def test_http_and_grpc_match_the_in_process_stylizer(server, reference, contents, styles):
    style = _bytes(styles[0])
    with Client(server.url("http"), MODEL) as http, Client(server.url("grpc"), MODEL) as grpc:
        style_id = http.upload_style(style)
        assert style_id == reference.style_id(style)
        png = http.stylize(_bytes(contents[0]), style_id, fmt="png")
        content_rgb = im.to_uint8(im.read_image(contents[0]).rgb)
        pixels = grpc.stylize_pixels(content_rgb, style_id)  # gRPC knows the id from HTTP's upload
    want = im.to_uint8(reference.stylize(contents[0], styles[0]).rgb).astype(int)
    got_http = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
    assert np.abs(got_http.astype(int) - want).max() <= 1
    assert pixels.shape == want.shape and np.abs(pixels.astype(int) - want).max() <= 1


def test_concurrent_requests_are_batched(server, contents, styles):
    with Client(server.url("http"), MODEL) as c:
        style_id = c.upload_style(_bytes(styles[1]))
    rgb = np.ascontiguousarray(cv2.resize(cv2.imread(str(contents[2])), (128, 128))[:, :, ::-1])
    errors = []

    def send():
        try:
            with Client(server.url("grpc"), MODEL) as c:
                for _ in range(3):
                    c.stylize_pixels(rgb, style_id)
        except ServerError as exc:
            errors.append(str(exc))

    _concurrently(send, 12)
    assert errors == []
    with Client(server.url("http"), MODEL) as c:
        stats = c.statistics()
    sizes = {
        int(b["batch_size"]): int(b["compute_infer"]["count"])
        for m in stats["model_stats"]
        for b in m["batch_stats"]
    }
    assert max(size for size, count in sizes.items() if count > 0) > 1, sizes


def test_malformed_requests_fail_alone_and_the_server_keeps_serving(server, contents, styles):
    with Client(server.url("http"), MODEL) as c:
        style_id = c.upload_style(_bytes(styles[0]))
        with pytest.raises(ServerError, match="not a readable image"):
            c.stylize(b"definitely not a jpeg", style_id)
        with pytest.raises(ServerError, match="MP limit"):
            c.stylize(_huge_png_header(), style_id)
        with pytest.raises(ServerError, match="unknown style_id"):
            c.stylize(_bytes(contents[0]), "0" * 64)
        with pytest.raises(ServerError, match="expects 'UINT8'"):
            c.infer(MODEL, {"pixels": np.zeros((1, 32, 32, 3), np.float32)}, ["pixels"])
        with pytest.raises(ServerError, match="format must be"):
            c.stylize(_bytes(contents[0]), style_id, fmt="gif")
        out = c.stylize(_bytes(contents[1]), style_id)  # and it still serves
    assert cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_COLOR) is not None


def test_client_defaults_to_the_only_served_model(server, contents, styles, tmp_path):
    out = tmp_path / "out.png"
    for protocol in ("http", "grpc"):
        proc = run_cli("client", server.url(protocol), contents[0], "-s", styles[0], "-o", out)
        assert proc.returncode == 0, proc.stderr
        assert cv2.imread(str(out)) is not None
    with Client(server.url("http"), None) as c:
        assert c.model == MODEL and c.served_models() == [MODEL]


def test_metrics_and_health_endpoints(server):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/v2/health/ready") as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics}/metrics") as r:
        text = r.read().decode()
    assert f'nv_inference_request_success{{model="{MODEL}"' in text


def test_short_load_test_has_no_errors(server, tmp_path):
    proc = run_cli(  # no -m: the server serves one bundle, so that one
        "loadtest",
        server.url("http"),
        "--concurrency",
        "1,4",
        "--duration",
        "3",
        "--size",
        "128",
        "--bundle",
        DEMO,
        "--backend",
        "ort-cpu",
        "--out",
        tmp_path,
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [lv["concurrency"] for lv in results["levels"]] == [1, 4]
    for level in results["levels"]:
        assert level["errors"] == 0 and level["requests"] > 0
        assert level["latency"]["p99_ms"] >= level["latency"]["p50_ms"] > 0
    local = results["in_process"]  # the same work without the server, for 3 s
    assert local["calls"] > 10 and local["p50_ms"] > 0
    one, four = local["floor"]
    assert (one["concurrency"], four["concurrency"]) == (1, 4)
    assert one["p50_ms"] == pytest.approx(local["p50_ms"])
    assert 3 * one["p50_ms"] < four["p50_ms"] < 6 * one["p50_ms"]
    assert {p.name for p in tmp_path.iterdir()} >= {"loadtest.json", "loadtest.md", "loadtest.png"}
    assert "floor p50 / p99 ms" in (tmp_path / "loadtest.md").read_text()


def test_floor_keeps_slow_spells_of_consecutive_calls():
    from styleship.serve.loadtest import floor

    calls = [30.0] * 400
    calls[200:220] = [60.0] * 20  # one slow spell: twenty calls at twice the time
    one, eight = floor(calls, [1, 8])
    assert one == {"concurrency": 1, "p50_ms": 30.0, "p99_ms": pytest.approx(60.0)}
    assert eight["p50_ms"] == 240.0
    assert eight["p99_ms"] == pytest.approx(480.0)  # 13 windows of 393 lie wholly in the spell
    assert floor(calls[:50], [1, 8, 64]) == [
        {"concurrency": 1, "p50_ms": 30.0, "p99_ms": None},
        {"concurrency": 8, "p50_ms": 240.0, "p99_ms": None},
    ]  # p99 from under 100 windows would be the maximum; no 64-call window at all


def test_full_queue_rejects_and_sigterm_lets_in_flight_requests_finish(tmp_path, contents, styles):
    srv = ServerProcess(
        tmp_path, "--max-queue", "1", "--max-batch", "1", "--max-queue-delay-us", "0"
    )
    try:
        with Client(srv.url("http"), MODEL) as c:
            style_id = c.upload_style(_bytes(styles[0]))
        content = _bytes(contents[0])
        outcomes: list[str] = []

        def send():
            try:
                with Client(srv.url("http"), MODEL) as c:
                    c.stylize(content, style_id)
                outcomes.append("ok")
            except ServerError as exc:
                outcomes.append(str(exc))

        _concurrently(send, 8)
        rejected = [o for o in outcomes if o != "ok"]
        assert rejected and all("queue" in o.lower() for o in rejected), outcomes
        assert "ok" in outcomes

        late = threading.Thread(target=send)
        outcomes.clear()
        late.start()
        time.sleep(0.3)  # in flight when the signal arrives
        assert srv.stop() == 0
        late.join()
        assert outcomes == ["ok"]
        assert not [
            p for p in srv.children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        ]
    finally:
        srv.stop()


def test_command_errors_are_one_line(tmp_path, contents):
    proc = run_cli("serve", tmp_path / "missing.stvae", "--http-port", "1")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "error:" in proc.stderr
    proc = run_cli(
        "client", "ftp://x", contents[0], "-m", MODEL, "--style-id", "a", "-o", tmp_path / "o.jpg"
    )
    assert proc.returncode == 1 and "http:// or grpc://" in proc.stderr
    proc = run_cli("loadtest", "http://192.0.2.1:8000", "-m", MODEL)
    assert proc.returncode == 1 and "not a loopback address" in proc.stderr
    proc = run_cli("client", "http://127.0.0.1:1", contents[0], "-o", tmp_path / "o.jpg")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: cannot list the models at 127.0.0.1:1")
