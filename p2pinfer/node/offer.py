"""What a node serves and how its advert offers it: the backend from `--backend`,
the models to advertise (never a substitute-model fault's), their benchmarks, and the
advert republished with the price of the moment (`node/run.py` wires them in).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from p2pinfer.backends.base import Backend, ModelInfo
from p2pinfer.gateway.view import GpuView, HardwareView
from p2pinfer.hardware import BenchCache, cached_benchmark
from p2pinfer.hardware.benchmark import BenchResult
from p2pinfer.hardware.probe import MachineProfile
from p2pinfer.jobs.job_server import JobServer
from p2pinfer.protocol import Advert, AdvertHardware, Gpu, ModelOffer
from p2pinfer.protocol.embedding import MAX_EMBEDDING_LENGTH
from p2pinfer.protocol.schema import CONTROLS
from p2pinfer.testing.faults import Fault

if TYPE_CHECKING:
    from p2pinfer.node.config import NodeConfig

log = logging.getLogger(__name__)


def model_offer(info: ModelInfo, price_per_1k: int, *, prompt_tps_milli: int = 0,
                generation_tps_milli: int = 0) -> ModelOffer:
    """How an advert describes one served model (its texts cut to the wire's bounds)."""
    return ModelOffer(
        name=info.name, digest=label(info.digest, 128),
        parameter_size=label(info.parameter_size, 32),
        quantization=label(info.quantization, 32), context_length=info.context_length,
        prompt_tps_milli=prompt_tps_milli, generation_tps_milli=generation_tps_milli,
        price_per_1k=price_per_1k, family=label(info.family, 64) or None,
        size_bytes=info.size_bytes or None, modified_at=info.modified_at_ms or None,
        embedding_length=info.embedding_length
        if 0 < info.embedding_length <= MAX_EMBEDDING_LENGTH else None,
    )


def label(text: str, size: int) -> str:
    """`text` as an advert may carry it: control characters as "?" (the wire refuses
    them: attack 62), cut to `size`."""
    return CONTROLS.sub("?", text)[:size]


@dataclass
class Served:
    """A model this node serves: what the backend says and what it measured."""

    info: ModelInfo
    bench: BenchResult | None = None


def substitute_name(spec: str) -> str:
    """The name the backend knows a substitute-model spec by (NAME, NAME=PATH or a .gguf)."""
    from p2pinfer.backends.models import normalize_name

    if "=" in spec:
        return normalize_name(spec.partition("=")[0])
    if spec.endswith(".gguf"):
        return normalize_name(Path(spec).stem.lower())
    return normalize_name(spec)


def served_fault(fault: Fault | None) -> Fault | None:
    """The fault as the job server applies it (a substitute named as the backend names it)."""
    if fault is not None and fault.kind == "substitute-model":
        return Fault("substitute-model", model=substitute_name(fault.model))
    return fault


def make_node_backend(config: NodeConfig) -> Backend | None:
    """The backend from `--backend` (None for `none`). With substitute-model the
    substitute is loaded too, but only the advertised models are offered."""
    if config.backend.strip().lower() == "none":
        return None
    from p2pinfer.backends.factory import make_backend

    models = list(config.models)
    if config.fault is not None and config.fault.kind == "substitute-model" and models:
        models.append(config.fault.model)
    return make_backend(config.backend, models=models, home=config.home,
                        engine_options=config.engine_options)


async def served_models(backend: Backend, config: NodeConfig) -> list[ModelInfo]:
    """The models to advertise: the backend's, limited to `--models` when given (the
    embedded engine was built with just those), never a substitute-model fault's."""
    from p2pinfer.backends.models import find_model

    fault = config.fault
    hidden = substitute_name(fault.model).lower() if (
        fault is not None and fault.kind == "substitute-model") else None
    if config.models and backend.name != "embedded":
        models = [await find_model(backend, name) for name in config.models]
    else:
        models = await backend.list_models()
    served = []
    for model in models:
        if CONTROLS.search(model.name):
            log.warning("model not advertised: its name %r has a control character",
                        model.name)
        elif model.name.lower() != hidden or not config.models:
            served.append(model)
    return served


async def benchmark_models(
    backend: Backend, models: list[ModelInfo], machine: MachineProfile, config: NodeConfig
) -> list[Served]:
    """Each model with its (cached) benchmark; without `benchmark`, unmeasured."""
    if not config.benchmark:
        return [Served(m) for m in models]
    cache = BenchCache(config.bench_cache or config.home / "bench.json")
    out = []
    for info in models:
        result, cached = await cached_benchmark(backend, info, machine.fingerprint(), cache)
        log.info("benchmark model=%s gen_tps=%.1f cached=%s", info.name,
                 result.gen_tokens_per_s, cached)
        out.append(Served(info, result))
    return out


def advert_builder(
    served: list[Served], server: JobServer, machine: MachineProfile, engine: str,
    config: NodeConfig,
) -> Callable[[], Advert]:
    """What the node advertises, priced at the moment of each republication."""
    hardware = AdvertHardware(
        cpu=label(machine.cpu_model, 128),
        cpu_cores=min(machine.cpu_cores, 65_535),
        ram_mb=machine.ram_total_bytes // 2**20,
        gpus=tuple(Gpu(label(g.name, 128), g.vram_total_bytes // 2**20)
                   for g in machine.gpus[:16]),
    )

    def current() -> Advert:
        offers = tuple(
            model_offer(
                s.info, server.advertised_price(s.info.name),
                prompt_tps_milli=int(s.bench.prompt_tokens_per_s * 1000) if s.bench else 0,
                generation_tps_milli=int(s.bench.gen_tokens_per_s * 1000) if s.bench else 0,
            )
            for s in served[:64]
        )
        return Advert(models=offers, hardware=hardware, engine=label(engine, 128),
                      stake=config.stake,
                      capacity=min(65_535, config.max_concurrency * len(offers)),
                      listen_addrs=(), seq=0, issued_at=0, ttl_ms=config.advert_ttl_ms)

    return current


def machine_view(machine: MachineProfile) -> HardwareView:
    """This machine as the gateway shows it."""
    gpus = tuple(GpuView(g.name, g.vram_total_bytes // 2**20) for g in machine.gpus)
    return HardwareView(machine.cpu_model, machine.cpu_cores, machine.ram_total_bytes // 2**20,
                        gpus)  # fmt: skip
