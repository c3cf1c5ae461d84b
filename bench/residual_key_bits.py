"""How many rows the residual kernel would refine in double with 16-bit keys
instead of float keys: the count behind docs/design.md's "keys of 16 bits"
(counted, not built).

    python bench/residual_key_bits.py [--K 100] [--columns 200]

Per column (sorted, ranks 0..K-1) and statistic (slopes, eq. 1; intercepts,
eq. 2), each row's K - 1 pair values become keys: the value rounded to float
(as math::pair_key), and for 16 bits the float's order key truncated to its
upper half (a monotone bucket, as a packed 16x2 network would sort). A row's
middle key bounds its median; the rows whose middle key lies between the
keys of the outer median's two ranks are the ones the kernel computes again
in double (its bounds are intervals around those keys, so this is the count
at their core), and within such a row the values sharing its middle key are
the ones selected exactly. Prints the means per statistic.
"""
import argparse

import numpy as np


def order_keys(v: np.ndarray) -> np.ndarray:
    """math::float_order_key of the values rounded to float."""
    b = v.astype(np.float32).view(np.uint32).astype(np.uint64)
    return np.where(b >> 31, ~b & 0xFFFFFFFF, b | 0x80000000)


def pair_values(y: np.ndarray, slope: bool) -> np.ndarray:
    """[K, K - 1]: row i's pair values (eq. 1 or 2) with every other rank."""
    K = len(y)
    x = np.arange(K, dtype=np.float64)
    j = np.array([[m for m in range(K) if m != i] for i in range(K)])
    i = np.arange(K)[:, None]
    a, b = np.minimum(i, j), np.maximum(i, j)
    num = (y[b] - y[a]) if slope else (x[b] * y[a] - x[a] * y[b])
    return num / (b - a)


def refined(y: np.ndarray, bits: int, slope: bool):
    K = len(y)
    keys = order_keys(pair_values(y, slope)) >> (32 - bits)
    mid = np.sort(keys, axis=1)[:, (K - 2) // 2]  # K - 1 keys a row; its lower middle one
    outer = np.sort(mid)
    lo, hi = outer[(K - 1) // 2], outer[K // 2]
    rows = np.nonzero((mid >= lo) & (mid <= hi))[0]
    within = [(keys[r] == mid[r]).sum() for r in rows]
    return len(rows), within


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--K", type=int, default=100)
    ap.add_argument("--columns", type=int, default=200)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    kinds = {
        "Gaussian": lambda n: rng.standard_normal(n),
        "Cauchy": lambda n: rng.standard_cauchy(n),
        "quantised": lambda n: np.round(3 * rng.standard_normal(n)),
    }
    print(f"K = {args.K}, {args.columns} columns a kind; per statistic: rows refined, values within a refined row")
    for name, draw in kinds.items():
        for bits in (32, 16):
            rows, within = [], []
            for _ in range(args.columns):
                y = np.sort(draw(args.K))
                for slope in (True, False):
                    r, w = refined(y, bits, slope)
                    rows.append(r)
                    within += w
            print(f"{name:10s} {bits}-bit keys: {np.mean(rows):.2f} rows, {np.mean(within):.2f} values")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
