"""hardware part of p2pinfer: the machine probe and the per-model benchmark."""

from p2pinfer.hardware.benchmark import BenchCache, BenchResult, cached_benchmark, run_benchmark
from p2pinfer.hardware.probe import GpuInfo, MachineProfile, probe

__all__ = [
    "BenchCache",
    "BenchResult",
    "GpuInfo",
    "MachineProfile",
    "cached_benchmark",
    "probe",
    "run_benchmark",
]
