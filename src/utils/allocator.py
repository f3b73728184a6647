"""How this process's C allocator handles the large blocks of a CPU step.

torch's CPU tensors come from the C library's malloc. glibc's serves a block above its mmap
threshold (which it raises as blocks are freed, to at most 32 MiB) with a fresh mmap and unmaps it
on free. A CPU training step of a 768-wide BERT at 32 x 128 tokens allocates blocks above that
bound every step: each layer's feed-forward activation, the GELU's output and their gradients
(4096 x 3072 floats, 48 MiB each), and the word-embedding gradient (30522 x 768 floats, 89 MiB).
So every step the kernel maps and zeroes 150-700 MB of new pages: 40k-172k minor page faults a
step (`getrusage`), where the same blocks could be reused. With mmap off and the heap top kept,
freed blocks are reused and later steps take no faults.

Measured on an Intel Xeon (family 6, model 167, 2 cores; bench/README.md, "Large blocks"), fresh
processes alternating: `finetune.py` trained 1.05x [1.03, 1.07] faster (768 wide, 3 layers) and
1.07x [1.06, 1.08] (the 6-layer MiniLM), 6 pairs each, with peak memory within 2% and the same
weights bit for bit; inference not decided either way.

Setting any `glibc.malloc.*` tunable in $GLIBC_TUNABLES keeps glibc's own behaviour (an explicit
choice wins); on a C library other than glibc nothing changes.
"""
import ctypes
import ctypes.util
import os
import platform

# mallopt's parameter numbers (glibc's <malloc.h>)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
# the largest value mallopt takes (an int): the heap top is returned to the kernel only when more
# than 2 GiB of it is free
NEVER_TRIM = 2 ** 31 - 1

_SET = None  # whether this process's malloc was changed (None: not asked yet)


def keep_freed_memory():
    """Makes glibc's malloc reuse freed large blocks instead of mapping new pages for each:
    mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM), once per process.

    Returns whether it was set: False off glibc, or when $GLIBC_TUNABLES sets a malloc tunable.
    """
    global _SET
    if _SET is None:
        _SET = False
        if (platform.libc_ver()[0] == "glibc"
                and "glibc.malloc." not in os.environ.get("GLIBC_TUNABLES", "")):
            libc = ctypes.CDLL(ctypes.util.find_library("c"))
            # mallopt returns 1 on success
            _SET = bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)
                        and libc.mallopt(M_MMAP_MAX, 0))
    return _SET
