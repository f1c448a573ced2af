"""What this machine has: CPU, RAM, and NVIDIA GPUs with their VRAM (through NVML).

Without an NVIDIA driver (or without `nvidia-ml-py`) the GPU list is empty;
probing never fails because a GPU is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    vram_total_bytes: int
    vram_free_bytes: int


@dataclass(frozen=True)
class MachineProfile:
    """One machine's compute, as advertised to the network."""

    cpu_model: str
    cpu_cores: int  # physical
    cpu_threads: int  # logical
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: tuple[GpuInfo, ...]
    gpu_driver: str  # "" without an NVIDIA driver
    os: str
    arch: str

    def fingerprint(self) -> str:
        """16 hex digits naming the hardware (not its load): CPU, RAM size, GPUs, driver."""
        stable = {
            "cpu": [self.cpu_model, self.cpu_cores, self.cpu_threads, self.arch],
            "ram_gib": round(self.ram_total_bytes / 2**30),
            "gpus": [[g.name, g.vram_total_bytes] for g in self.gpus],
            "driver": self.gpu_driver,
        }
        encoded = json.dumps(stable, sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["gpus"] = [asdict(g) for g in self.gpus]
        data["fingerprint"] = self.fingerprint()
        return data


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        try:
            for line in cpuinfo.read_text(errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
        except OSError:
            pass
    return platform.processor() or platform.machine() or "unknown"


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def probe_gpus(nvml: Any = None) -> tuple[tuple[GpuInfo, ...], str]:
    """NVIDIA GPUs and the driver version, via NVML; ((), "") when there is none.

    `nvml` is the `pynvml` module (injectable for tests); imported when None.
    """
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            return (), ""
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        log.debug("no NVIDIA driver: %s", exc)
        return (), ""
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = _text(nvml.nvmlDeviceGetName(handle))
            gpus.append(GpuInfo(index, name, int(memory.total), int(memory.free)))
        return tuple(gpus), driver
    except Exception as exc:
        log.warning("NVML failed while listing GPUs: %s", exc)
        return (), ""
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            log.debug("nvmlShutdown failed", exc_info=True)


def probe(nvml: Any = None) -> MachineProfile:
    """Probe this machine now."""
    memory = psutil.virtual_memory()
    gpus, driver = probe_gpus(nvml)
    return MachineProfile(
        cpu_model=_cpu_model(),
        cpu_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        cpu_threads=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_total_bytes=int(memory.total),
        ram_available_bytes=int(memory.available),
        gpus=gpus,
        gpu_driver=driver,
        os=f"{platform.system()} {platform.release()}",
        arch=platform.machine(),
    )
