"""The exported Triton repository loaded by a real `tritonserver`: the one PyTriton ships.

That binary has only the Python backend, so the ONNX models are replaced by Python
stand-ins with the same config (inputs, outputs, reshape, batching, warm-up); the
ensemble is kept exactly as exported. Triton validates an ensemble against its
composing models' configs at load time, which no schema parse can check.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytriton = pytest.importorskip("pytriton", reason="needs PyTriton's tritonserver ('.[serve]')")

STANDIN = '''\
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Zeros of each output's configured shape; -1 sides copy the first input's."""

    def initialize(self, args):
        self.config = json.loads(args["model_config"])

    def execute(self, requests):
        responses = []
        for request in requests:
            first = self.config["input"][0]["name"]
            ref = pb_utils.get_input_tensor_by_name(request, first).as_numpy()
            outs = []
            for out in self.config["output"]:
                dims = [ref.shape[0]] + [
                    ref.shape[i + 1] if d == -1 else d for i, d in enumerate(out["dims"])
                ]
                outs.append(pb_utils.Tensor(out["name"], np.zeros(dims, np.float32)))
            responses.append(pb_utils.InferenceResponse(output_tensors=outs))
        return responses
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_dir(tmp: Path) -> tuple[Path, Path, dict]:
    """PyTriton's server files laid out as it lays them out: the binary, the Python backend
    with the stub for this interpreter, and the environment it runs them with."""
    from pytriton.utils.distribution import get_libs_path, get_root_module_path, get_stub_path

    dist = get_root_module_path() / "tritonserver"
    binary = dist / "bin" / "tritonserver"
    stub = get_stub_path(f"{sys.version_info[0]}.{sys.version_info[1]}")
    if not binary.is_file() or not stub.is_file():
        pytest.skip(f"PyTriton ships no tritonserver or no stub for this Python ({dist})")
    backends = tmp / "backends"
    shutil.copytree(dist / "backends", backends)
    shutil.copy(stub, backends / "python" / "triton_python_backend_stub")
    env = os.environ | {
        "LD_LIBRARY_PATH": ":".join(
            p for p in (os.environ.get("LD_LIBRARY_PATH"), str(get_libs_path())) if p
        ),
        # The stub starts the model with the `python` first on PATH: this interpreter.
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    return binary, backends, env


def _stand_in(model_dir: Path) -> None:
    """Same config, Python backend instead of ONNX Runtime."""
    config = model_dir / "config.pbtxt"
    text = config.read_text()
    assert 'platform: "onnxruntime_onnx"' in text
    config.write_text(text.replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
    (model_dir / "1" / "model.onnx").unlink()
    (model_dir / "1" / "model.py").write_text(STANDIN)


def _get(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, data=data, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def tritonserver(tmp_path):
    """Start tritonserver on a repository; yields (http base URL, process, log path)."""
    procs = []

    def start(repo: Path):
        binary, backends, env = _server_dir(tmp_path)
        http = _free_port()
        log = tmp_path / "tritonserver.log"
        args = [
            str(binary),
            f"--model-repository={repo}",
            f"--backend-directory={backends}",
            f"--http-port={http}",
            f"--grpc-port={_free_port()}",
            "--allow-metrics=false",
            "--exit-on-error=true",
            "--strict-readiness=true",
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append(proc)
        return f"http://127.0.0.1:{http}", proc, log

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(base: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")
            if "error while loading shared libraries" in text or proc.returncode in (126, 127):
                pytest.skip(f"tritonserver cannot start here: {text.strip().splitlines()[-1]}")
            errors = [ln for ln in text.splitlines() if ln.startswith("E") or "error" in ln]
            pytest.fail(f"tritonserver exited {proc.returncode}: " + " | ".join(errors[-3:]))
        try:
            if _get(f"{base}/v2/health/ready")[0] == 200:
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.3)
    pytest.fail(f"tritonserver not ready after {timeout:.0f}s; log: {log}")


def test_exported_repository_loads_in_tritonserver(small_bundle, tmp_path, tritonserver):
    from styleship.export.triton import export_triton

    repo = tmp_path / "repo"
    export_triton(small_bundle, repo, kind="KIND_CPU", max_batch=4, warmup_sizes=(32,))
    for model in ("small", "small_style"):
        _stand_in(repo / model)
    base, proc, log = tritonserver(repo)
    _wait_ready(base, proc, log)
    status, body = _get(f"{base}/v2/repository/index", data=b"{}")
    assert status == 200
    states = {m["name"]: m.get("state") for m in json.loads(body)}
    assert states == {"small": "READY", "small_style": "READY", "small_pipeline": "READY"}
    # One request through the ensemble: α travels as [batch, 1] into a model that
    # sees it as [batch] (the reshape), and the image comes back at the content's size.
    request = {
        "inputs": [
            {"name": "style", "shape": [1, 3, 24, 24], "datatype": "FP32", "data": [0.5] * 1728},
            {"name": "content", "shape": [1, 3, 16, 32], "datatype": "FP32", "data": [0.5] * 1536},
            {"name": "alpha", "shape": [1, 1], "datatype": "FP32", "data": [1.0]},
        ]
    }
    status, body = _get(f"{base}/v2/models/small_pipeline/infer", json.dumps(request).encode())
    assert status == 200, body[:300]
    outputs = {o["name"]: o["shape"] for o in json.loads(body)["outputs"]}
    assert outputs == {"image": [1, 3, 16, 32]}
