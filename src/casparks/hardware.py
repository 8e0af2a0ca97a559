"""What the processor does natively, so that precision choices never make a run slower.

bfloat16 is fast only where the hardware has it: AVX-512 BF16 or AMX on a CPU, Ampere or newer
on NVIDIA GPUs. Elsewhere PyTorch emulates it, and emulation is slow beyond any gain: on an AMD
EPYC with AVX2 only (2 cores, 2026-12-05) one 220 × 64 × 512 window of the bundled U-Net took
650 s in bfloat16 against 3.1 s in float32, and training steps took over 40 s against 10 s
(benchmarks/results/detect.md).
"""

from __future__ import annotations

from typing import MutableMapping

__all__ = ["available_memory_bytes", "native_bf16", "emulated_bf16_message", "request_huge_pages"]


def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` ("cpu" or "cuda") computes in bfloat16 natively."""
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def emulated_bf16_message(device_type: str) -> str:
    """The one-line reason to refuse bfloat16 on a device that only emulates it."""
    what = "this CPU has neither AVX-512 BF16 nor AMX" if device_type == "cpu" else "this GPU has no bfloat16 units"
    return (f"bfloat16 would be emulated ({what}): about 200x slower than float32 for the U-Net's "
            f"convolutions, measured")


def request_huge_pages(environ: MutableMapping[str, str]) -> bool:
    """Ask PyTorch's CPU allocator for transparent huge pages, unless the user chose otherwise.

    ``THP_MEM_ALLOC_ENABLE=1`` makes PyTorch advise the kernel to back its large tensors with
    2 MB pages. On the AVX2 CPU of session 11 (THP mode ``madvise``) a 3-movie ``casparks detect``
    took 34-37 s instead of 39-46 s (4 pairings), with the same peak memory: fewer page faults on
    the U-Net's large activations. PyTorch reads the variable once, at its first allocation, so
    this must run before any tensor exists: the command line calls it first thing. Returns
    whether it set it.
    """
    if "THP_MEM_ALLOC_ENABLE" in environ:
        return False
    environ["THP_MEM_ALLOC_ENABLE"] = "1"
    return True


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
