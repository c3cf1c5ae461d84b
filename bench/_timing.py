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


def median_time(fn, repeats: int, first=None) -> float:
    """Median of ``repeats`` timed calls after a warm-up call (or after a call
    already made that took ``first`` seconds); where the warm-up took over 5 s,
    it is the measurement (one call)."""
    if first is None:
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
    if first > 5.0:
        return first
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def check_close(got, want, what):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        if g.dtype == torch.int32:
            assert torch.equal(g, w), what
        else:
            torch.testing.assert_close(g.double(), w.double(), rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")


def table_row(row, ref_digits=1, native_digits=2, bw_digits=2):
    """One markdown row (name, K, d, reference s, native s, speed-up, GB/s,
    fraction of the bandwidth baseline, note); None cells stay empty."""
    name, K, d, t_ref, t_nat, speedup, bw, frac, note = row
    cell = lambda v, fmt: "" if v is None else fmt.format(v)  # noqa: E731
    return (f"| {name} | {K} | {d:.0e} | {cell(t_ref and t_ref * 1e3, '{:.%df}' % ref_digits)} "
            f"| {cell(t_nat and t_nat * 1e3, '{:.%df}' % native_digits)} | {cell(speedup, '{:.1f}x')} "
            f"| {cell(bw, '{:.%df}' % bw_digits)} | {cell(frac and frac * 100, '{:.0f}%')} | {note} |")


def publish(text, out=None):
    """Writes a results table to ``out`` (when given) and prints it."""
    if out:
        with open(out, "w") as f:
            f.write(text)
    print(text)
