"""The only module that imports onnxruntime: sessions (providers, threads), running them, int8 quantisation."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from threadpoolctl import threadpool_limits

from worker.engine.gate import RunGate
from worker.errors import ModelError
from worker.settings import Settings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(requested: tuple[str, ...]) -> list[str]:
    """The requested providers that this onnxruntime build has; by default CUDA when present, then CPU."""
    available = ort.get_available_providers()
    wanted = list(requested) if requested else [CUDA, CPU]
    chosen = [p for p in wanted if p in available]
    missing = [p for p in requested if p not in available]
    if missing:
        log.warning("onnxruntime providers not available here: %s (have %s)", missing, available)
    return chosen or [CPU]


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """What measured fastest on one kind of device (docs/benchmarks.md), and a floor on its speed."""

    max_pairs_per_run: int  # pairs in one model run
    token_budget: int  # padded tokens in one model run
    bulk_max_pairs: int  # pairs in one bulk batch: the Python around the model is paid once per batch
    slowest_pairs_per_s: float  # a conservative floor: a batch must finish well within the visibility timeout
    worker_processes: int = 1  # `labelq worker`'s processes, each with its own session (on CUDA: one device shared)


# a CPU: 16 pairs a run ran the seed-sized DeBERTa 5-16% faster than 8 at every label count on an Intel Xeon (int8
# and fp32; an AMD EPYC found them even), MiniLM the same; the seed model int8 does 40-400 pairs/s on 2 cores,
# and 20 covers fp32 on one thread with 128-token pairs. 256 padded tokens a run (16 sequences of 16) bounds what a
# realtime request waits for between a bulk batch's runs: the longest run is then ~1.3x the median (MiniLM 47 vs
# 37 ms, DeBERTa int8 ~165 vs 110 ms on 2 cores), where at 768 a long-text run took 3.4x the median, at no cost
# measured (1,024 MiniLM texts on 77 labels and 204 DeBERTa int8 requests on 5, best of 3: 128, 192, 256 and 768
# within 3% of each other, 256 the best for MiniLM; a per-run cost of ~2.6 ms for MiniLM is why 128 is not)
CPU_PROFILE = DeviceProfile(max_pairs_per_run=16, token_budget=256, bulk_max_pairs=1024, slowest_pairs_per_s=20)
# CUDA: an H200 ran fp32 fastest at 256 pairs a run (the sweep's largest); 1,341 pairs/s at 8 a run is the floor
# seen there, and 500 leaves room for smaller GPUs; 1,024-pair bulk batches gave it half a best run at 2 labels
# On CUDA the device idles while one Python process tokenises, claims, parses and publishes (docs/benchmarks.md:
# the engine reached 0.35-0.39 of raw session.run, one process): several processes, each with its own session on
# the same device, keep it fed while each does its Python; 4 of them, or one per two cores on a smaller host.
CUDA_PROCESSES = 4
CUDA_PROFILE = DeviceProfile(
    max_pairs_per_run=256,
    token_budget=65536,
    bulk_max_pairs=4096,
    slowest_pairs_per_s=500,
    worker_processes=CUDA_PROCESSES,
)


@dataclass(frozen=True, slots=True)
class RunDefaults:
    """How models run on this machine: the settings' explicit values, else what measured fastest on the
    device the CUDA provider or the CPU gives (int8 on a CPU, fp32 and far larger runs on CUDA)."""

    cuda: bool
    prefer_quantized: bool
    max_pairs_per_run: int
    token_budget: int
    bulk_max_pairs: int
    slowest_pairs_per_s: float
    worker_processes: int = 1  # `labelq worker`'s default process count on this device


def run_defaults(settings: Settings, cuda: bool | None = None) -> RunDefaults:
    """`cuda`: whether the CUDA provider runs the models (None: this onnxruntime build and the settings say)."""
    if cuda is None:
        cuda = CUDA in choose_providers(settings.providers)
    device = CUDA_PROFILE if cuda else CPU_PROFILE
    return RunDefaults(
        cuda=cuda,
        prefer_quantized=not cuda if settings.prefer_quantized is None else settings.prefer_quantized,
        max_pairs_per_run=settings.max_pairs_per_run or device.max_pairs_per_run,
        token_budget=settings.token_budget or device.token_budget,
        bulk_max_pairs=settings.bulk_max_pairs or device.bulk_max_pairs,
        slowest_pairs_per_s=device.slowest_pairs_per_s,
        worker_processes=settings.worker_processes
        or (min(device.worker_processes, max(1, (os.cpu_count() or 1) // 2)) if cuda else device.worker_processes),
    )


@dataclass(frozen=True, slots=True)
class SessionSpec:
    providers: tuple[str, ...] = ()
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    cuda_mem_limit_mb: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionSpec:
        return cls(settings.providers, settings.intra_op_threads, settings.inter_op_threads, settings.cuda_mem_limit_mb)


def provider_options(providers: list[str], spec: SessionSpec) -> list[str | tuple[str, dict[str, str]]]:
    """On CUDA, each process's memory arena grows by what a run asks, not by doubling (several worker processes
    share one device), and stops at LABELQ_CUDA_MEM_LIMIT_MB when set."""
    options: dict[str, str] = {"arena_extend_strategy": "kSameAsRequested"}
    if spec.cuda_mem_limit_mb:
        options["gpu_mem_limit"] = str(spec.cuda_mem_limit_mb * 1024 * 1024)
    return [(p, options) if p == CUDA else p for p in providers]


def quiet_blas() -> None:
    """One BLAS thread for numpy in this process. Its work between model runs is small (pooling, cosines); idle
    OpenBLAS threads spin after each call and took the cores onnxruntime's threads run on: MiniLM on 77 labels
    spent 1.09 s in `session.run` instead of 0.74 s for the same runs (docs/benchmarks.md)."""
    threadpool_limits(limits=1, user_api="blas")


class OnnxModel:
    """A warm inference session and the facts its graph declares (input names, static sequence length).
    Loading one limits numpy's BLAS to one thread in this process (`quiet_blas`)."""

    def __init__(self, path: Path, spec: SessionSpec, gate: RunGate | None = None) -> None:
        quiet_blas()
        self.gate = gate
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = spec.intra_op_threads
        options.inter_op_num_threads = spec.inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        wanted = choose_providers(spec.providers)
        try:
            self._session = ort.InferenceSession(str(path), options, providers=provider_options(wanted, spec))
        except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable graphs
            raise ModelError(f"cannot load ONNX model {path}: {exc}") from exc
        self.path = path
        inputs = self._session.get_inputs()
        self.input_names: frozenset[str] = frozenset(i.name for i in inputs)
        ids = next((i for i in inputs if i.name == "input_ids"), None)
        if ids is None:
            raise ModelError(f"{path} has no input_ids input (inputs: {sorted(self.input_names)})")
        length = ids.shape[1] if len(ids.shape) > 1 else None
        self.static_sequence_length: int | None = length if isinstance(length, int) and length > 0 else None
        self.output_name: str = self._session.get_outputs()[0].name
        self.providers: list[str] = self._session.get_providers()
        if wanted[0] != self.providers[0]:  # e.g. CUDA asked for, its libraries not found: onnxruntime runs on
            log.warning("%s runs on %s, not %s (see onnxruntime's error above)", path, self.providers[0], wanted[0])
        log.info("onnxruntime session for %s on %s", path, ", ".join(self.providers))

    @property
    def session(self) -> ort.InferenceSession:
        """The session itself (benchmarks time `session.run` alone against it)."""
        return self._session

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on the declared inputs among `feeds`; returns the first output. The gate (if any) is passed
        first: what waits for a turn between runs goes now (worker/engine/gate.py)."""
        if self.gate is not None:
            self.gate.before_run()
        declared = {name: array for name, array in feeds.items() if name in self.input_names}
        outputs = self._session.run([self.output_name], declared)
        return np.asarray(outputs[0])


def quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime dynamic quantisation (int8 weights, activations quantised at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
