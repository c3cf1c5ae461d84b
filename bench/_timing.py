"""Timing helpers shared by the benchmark scripts."""
import statistics
import time

import torch


def median_seconds(fn, repeats=7, warmup=1, min_time=0.0):
    """Median wall time of fn() over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start) < min_time:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return statistics.median(times)


def check_close(got, want, what):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        if g.dtype == torch.int32:
            assert torch.equal(g, w), what
        else:
            torch.testing.assert_close(g.double(), w.double(), rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")
