"""Sandbox speed: session start, cell round trip and throughput, against a bare Python start-up.

    python -m bench.sandbox --json

Prints `session_start_p50_ms` (a new sandboxed session with its images preloaded, ready for a
cell), `cell_rtt_p50_ms` (a trivial cell), `cells_per_s` (trivial cells, 2 workers, a session
each) and `baseline_python_start_p50_ms` (`python -c pass` as a subprocess), all measured in the
same run. Targets: session ≤ 20 ms p50, cell ≤ 3 ms p50, ≥ 300 cells/s on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import threading
import time

from PIL import Image

from synth.tools.kernel import KernelConfig, PythonKernel
from synth.tools.sandbox import KernelPool, SandboxConfig


def _ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--cells", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    buffer = io.BytesIO()
    Image.new("RGB", (512, 512), (40, 90, 160)).save(buffer, format="PNG")
    image = buffer.getvalue()
    cfg = KernelConfig()

    baseline = []
    for _ in range(20):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        baseline.append(time.perf_counter() - started)

    with KernelPool(SandboxConfig()) as pool:
        starts = []
        for _ in range(args.sessions):
            kernel = PythonKernel([image], pool, cfg)
            started = time.perf_counter()
            kernel.start()
            starts.append(time.perf_counter() - started)
            kernel.close()

        rtts = []
        with PythonKernel([image], pool, cfg) as kernel:
            kernel.execute("pass")
            for _ in range(args.cells):
                started = time.perf_counter()
                result = kernel.execute("pass")
                rtts.append(time.perf_counter() - started)
                assert result.status == "ok"

        per_worker = args.cells

        def worker() -> None:
            with PythonKernel([image], pool, cfg) as kernel:
                for _ in range(per_worker):
                    kernel.execute("x = 1 + 1")

        threads = [threading.Thread(target=worker) for _ in range(2)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        throughput = 2 * per_worker / (time.perf_counter() - started)
        mode = pool.mode

    result = {
        "isolation": mode,
        "session_start_p50_ms": _ms(starts),
        "cell_rtt_p50_ms": _ms(rtts),
        "cells_per_s": round(throughput, 1),
        "baseline_python_start_p50_ms": _ms(baseline),
    }
    result["session_start_vs_python_start"] = round(result["session_start_p50_ms"] / result["baseline_python_start_p50_ms"], 3)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
