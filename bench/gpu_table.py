"""The GPU table: every op on CUDA tensors against its pure-PyTorch reference
on the same GPU, results checked before timing; bandwidth against the
device's measured copy bandwidth; the issue's targets stated per row.

    python bench/gpu_table.py --out bench/results/<gpu>.md      (bench/gpu_check.sh names the file)

Times are medians of CUDA-event-timed runs after a warm-up. Effective
bandwidth = bytes of `updates` read once / native time; the copy bandwidth is
a device-to-device copy of 2 GB counting bytes read plus bytes written.
Shapes whose inputs (or the reference's temporaries) do not fit are skipped
and said so.
"""
import argparse
import datetime
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import robustagg  # noqa: E402
from robustagg import ops, reference  # noqa: E402
from _timing import check_close, median_seconds, publish, table_row  # noqa: E402
from table import cases  # noqa: E402  (the same ops and arguments as the CPU table)

STREAM_SHAPES = [(10, 10**6), (10, 10**8), (32, 10**6), (32, 10**8), (100, 10**6), (100, 10**7)]
RESIDUAL_REF_SLICE = 20_000  # the residual reference on the GPU is timed on this many coordinates and scaled


def event_median(fn, repeats=10, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def copy_bandwidth():
    src = torch.empty(2 * 2**30 // 4, dtype=torch.float32, device="cuda").normal_()
    dst = torch.empty_like(src)
    t = event_median(lambda: dst.copy_(src), repeats=20)
    return 2 * src.numel() * 4 / t / 1e9


def target(name, K, d):
    if name in ("sign_vote", "robust_lr_mean") and d >= 10**8:
        return "copy BW >= 85%"
    if name in ("trimmed_mean", "median") and K <= 32:
        return "copy BW >= 50%"
    if name in ("trimmed_mean", "median") and K == 100:
        return ">= 10x reference"
    if name == "residual_reweight" and K == 100 and d == 10**6:
        return ">= 100x CPU native"
    if name == "pairwise_sq_distances" and K == 100 and d == 10**7:
        return "within 2x of cdist"
    return ""


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="write the markdown table here")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="small shapes only (a smoke run)")
    args = p.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA device"
    info = robustagg.native_info()
    assert info["ops"]["median"]["cuda"] == "native", "this build has no CUDA kernels"
    shapes = [(10, 10**5), (100, 10**5)] if args.quick else STREAM_SHAPES
    props = torch.cuda.get_device_properties(0)
    bw_copy = copy_bandwidth()
    print(f"{props.name}: measured copy bandwidth {bw_copy:.0f} GB/s", flush=True)
    rows = []
    torch.manual_seed(0)
    for K, d in shapes:
        try:
            u = torch.randn(K, d, device="cuda")
        except torch.cuda.OutOfMemoryError:
            rows.append(("(all)", K, d, None, None, None, None, None, "input does not fit"))
            continue
        nbytes = u.numel() * 4
        for name, native, ref in cases(K):
            if name in ("residual_reweight",) and d > 10**6:
                continue
            if name in ("pairwise_sq_distances", "cosine_similarity") and d > 10**7:
                continue
            note, t_ref = target(name, K, d), None
            try:
                if name == "residual_reweight":
                    sl = u[:, :RESIDUAL_REF_SLICE].contiguous()
                    check_close(native(sl), ref(sl), name)
                    t_ref = event_median(lambda: ref(sl), repeats=1, warmup=0) * (d / RESIDUAL_REF_SLICE)
                    note += f"; reference timed on d={RESIDUAL_REF_SLICE}, scaled"
                else:
                    check_close(native(u), ref(u), name)
                    t_ref = event_median(lambda: ref(u), repeats=max(1, args.repeats // 3), warmup=1)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                note += "; reference does not fit (checked on the first 10^6 coordinates)"
                sl = u[:, :10**6].contiguous()
                check_close(native(sl), ref(sl), name)
            t_nat = event_median(lambda: native(u), repeats=args.repeats)
            bw = nbytes / t_nat / 1e9
            rows.append((name, K, d, t_ref, t_nat, None if t_ref is None else t_ref / t_nat, bw, bw / bw_copy, note))
            print(_fmt(rows[-1]), flush=True)
            if name == "pairwise_sq_distances":
                t_cd = event_median(lambda: torch.cdist(u, u) ** 2, repeats=args.repeats)
                rows.append(("  vs torch.cdist(u, u)**2", K, d, t_cd, t_nat, t_cd / t_nat, bw, bw / bw_copy,
                             "cdist: Gram trick in float32 (inexact)"))
                print(_fmt(rows[-1]), flush=True)
            if name == "residual_reweight" and K == 100:
                uc = u.cpu()
                t_cpu = median_seconds(lambda: ops.residual_reweight(uc[:, :10**5].contiguous()), repeats=1,
                                       warmup=0) * (d / 10**5)
                rows.append(("  vs CPU native (this machine)", K, d, t_cpu, t_nat, t_cpu / t_nat, bw, bw / bw_copy,
                             f"{ops.get_num_threads()} CPU threads, timed on d=1e5 and scaled"))
                print(_fmt(rows[-1]), flush=True)
        del u
        torch.cuda.empty_cache()
    header = ("| op | K | d | reference ms | native ms | speed-up | native GB/s | of copy BW | target / note |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---|")
    meta = (f"GPU: {props.name} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB); "
            f"measured copy bandwidth {bw_copy:.0f} GB/s (read + write). torch {torch.__version__}; "
            f"robustagg {robustagg.__version__} (CUDA archs {','.join(info['cuda_archs'])}); "
            f"{datetime.date.today().isoformat()}. float32, CUDA-event medians of {args.repeats} runs "
            f"(references: fewer).")
    text = ("# GPU benchmark: CUDA kernels vs pure-PyTorch references on the same GPU\n\n" + meta + "\n\n"
            + "\n".join([header] + [_fmt(r) for r in rows]) + "\n")
    publish(text, args.out)


def _fmt(r):
    return table_row(r, ref_digits=2, native_digits=3, bw_digits=0)


if __name__ == "__main__":
    main()
