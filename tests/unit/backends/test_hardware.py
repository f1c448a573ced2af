from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from p2pinfer.backends.base import ModelInfo
from p2pinfer.hardware.benchmark import BenchCache, BenchResult
from p2pinfer.hardware.probe import GpuInfo, probe, probe_gpus


class FakeNvml:
    """Stands in for `pynvml` with two GPUs (this machine has no NVIDIA driver)."""

    def __init__(self, fail_init: bool = False) -> None:
        self.fail_init, self.shut_down = fail_init, False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> Any:
        return ["NVIDIA H100 80GB HBM3", b"NVIDIA L4"][handle]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        total = [85_520_809_984, 24_152_899_584][handle]
        return SimpleNamespace(total=total, free=total // 2, used=total // 2)


def test_probe_reports_cpu_and_ram_and_never_fails_without_a_gpu_driver() -> None:
    profile = probe()  # this machine: no NVIDIA driver
    assert profile.cpu_threads >= profile.cpu_cores >= 1
    assert profile.ram_total_bytes > 0 and profile.cpu_model
    assert probe(FakeNvml(fail_init=True)).gpus == ()
    assert len(profile.fingerprint()) == 16


def test_gpus_and_vram_are_read_through_nvml() -> None:
    nvml = FakeNvml()
    gpus, driver = probe_gpus(nvml)
    assert driver == "550.54.15" and nvml.shut_down
    assert gpus == (
        GpuInfo(0, "NVIDIA H100 80GB HBM3", 85_520_809_984, 42_760_404_992),
        GpuInfo(1, "NVIDIA L4", 24_152_899_584, 12_076_449_792),
    )


def test_fingerprint_names_the_hardware_not_its_load() -> None:
    with_gpus = probe(FakeNvml())
    again = probe(FakeNvml())
    assert with_gpus.fingerprint() == again.fingerprint()
    assert with_gpus.fingerprint() != probe(FakeNvml(fail_init=True)).fingerprint()
    assert with_gpus.to_json()["gpus"][1]["name"] == "NVIDIA L4"


def result(model: ModelInfo, hardware: str, rate: float) -> BenchResult:
    return BenchResult(model.name, model.digest, hardware, "embedded", 300.0, rate, 40.0,
                       96, 64, 3, 1_700_000_000_000)  # fmt: skip


def test_benchmarks_are_cached_by_model_digest_and_hardware(tmp_path: Path) -> None:
    cache = BenchCache(tmp_path / "bench.json")
    model = ModelInfo("smollm2:135m", "aa" * 32)
    renamed = ModelInfo("other-name:1", "aa" * 32)
    requantized = ModelInfo("smollm2:135m", "bb" * 32)
    cache.put(result(model, "hw1", 75.0), model)
    assert BenchCache(tmp_path / "bench.json").get(model, "hw1", "embedded") == result(
        model, "hw1", 75.0
    )
    assert cache.get(renamed, "hw1", "embedded") is not None  # same file, same speed
    assert cache.get(requantized, "hw1", "embedded") is None
    assert cache.get(model, "hw2", "embedded") is None
    assert cache.get(model, "hw1", "ollama") is None


def test_an_unreadable_cache_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text("{not json")
    model = ModelInfo("m", "aa" * 32)
    assert BenchCache(path).get(model, "hw", "embedded") is None
    BenchCache(path).put(result(model, "hw", 1.0), model)
    assert BenchCache(path).get(model, "hw", "embedded") is not None


@pytest.mark.parametrize("value", [b"\xff", "x"])
def test_nvml_text_may_be_bytes_or_str(value: Any) -> None:
    nvml = FakeNvml()
    nvml.nvmlSystemGetDriverVersion = lambda: value  # type: ignore[method-assign]
    assert isinstance(probe_gpus(nvml)[1], str)
