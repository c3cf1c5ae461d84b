"""Per-call dispatch overhead: torch.library.custom_op vs Library.define/impl.

The measurement behind the choice in robustagg/ops.py.
    python bench/overhead.py
"""
import timeit

import torch


def main():
    x = torch.randn(4, 8)

    @torch.library.custom_op("ovh::co", mutates_args=())
    def co(u: torch.Tensor) -> torch.Tensor:
        return u.new_empty(u.shape[1])

    @co.register_fake
    def _(u):
        return u.new_empty(u.shape[1])

    lib = torch.library.Library("ovh", "FRAGMENT")
    lib.define("li(Tensor u) -> Tensor")
    lib.impl("li", lambda u: u.new_empty(u.shape[1]), "CPU")
    torch.library.register_fake("ovh::li", lib=lib)(lambda u: u.new_empty(u.shape[1]))

    import robustagg.ops as ops
    small = torch.randn(3, 4)
    for name, f in [("plain python function", lambda: x.new_empty(x.shape[1])),
                    ("torch.library.custom_op", lambda: co(x)),
                    ("Library.define/impl", lambda: torch.ops.ovh.li(x)),
                    ("robustagg.ops.median, [3, 4] (checks + kernel)", lambda: ops.median(small))]:
        n = 20000
        t = min(timeit.repeat(f, number=n, repeat=5)) / n * 1e6
        print(f"{name:48s} {t:6.2f} us/call")


if __name__ == "__main__":
    main()
