"""Calls every CUDA kernel once on small inputs that reach every path (register
networks and the buffer path, chunked launches, non-finite columns, every
dtype): the program that compute-sanitizer's memcheck and racecheck watch in
bench/gpu_check.sh. Exits non-zero if a result disagrees with the same launchers
run on the CPU under the emulation (ops.run_device_math)."""
import sys

import torch

from robustagg import _C, ops

CALLS = [("sign_vote", ()), ("robust_lr_mean", (2,)), ("trimmed_mean", (1,)), ("median", ()),
         ("masked_trimmed_mean", (0.5, 1)), ("repeated_median_line", ()), ("residual_reweight", ()),
         ("residual_client_sums", ()), ("pairwise_sq_distances", ()), ("cosine_similarity", ()),
         ("pairwise_stats", ()), ("robust_lr_mean_counted", (2,)), ("sq_distances_to", ()),
         ("closest_to_median_mean", (1,))]


def main():
    bad = 0
    old = _C._set_scratch_bytes(1 << 16)  # several chunks even at this size
    try:
        for K in (3, 32, 33, 70):
            for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
                u = torch.randn(K, 777, dtype=torch.float64).to(dtype)
                u[0, 5] = float("nan")
                u[1, 6] = float("inf")
                for name, args in CALLS:
                    got = getattr(ops, name)(u.cuda(), *args)
                    want = ops.run_device_math(name, u, *args)
                    got = got if isinstance(got, tuple) else (got,)
                    want = want if isinstance(want, tuple) else (want,)
                    for g, w in zip(got, want):
                        if not torch.equal(torch.nan_to_num(g.cpu()), torch.nan_to_num(w)):
                            print(f"MISMATCH {name} K={K} {dtype}", flush=True)
                            bad += 1
                W = torch.rand(K, dtype=torch.float64)
                got = ops.residual_apply(u.cuda(), W.cuda())
                want = ops.run_device_math("residual_apply", u, W)
                for g, wnt in zip(got, want):
                    if not torch.equal(torch.nan_to_num(g.cpu()), torch.nan_to_num(wnt)):
                        print(f"MISMATCH residual_apply K={K} {dtype}", flush=True)
                        bad += 1
        w = torch.rand(33, device="cuda") + 0.1
        ops.sign_vote(torch.randn(33, 999, device="cuda"), w)
        torch.cuda.synchronize()
    finally:
        _C._set_scratch_bytes(old)
    print(f"gpu_driver: {bad} mismatches")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
