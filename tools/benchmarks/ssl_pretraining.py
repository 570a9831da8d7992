"""`make bench` plugin: pretraining slices/s per method of cmr_ssp_pretraining and its ratio to a plain PyTorch loop.

For each method overlay of the bundle (``cmrssl.bundle_configs.method_overlays``) the bundle's own
``SSLTrainer`` (built by MONAI's ``ConfigParser`` from ``configs/train.json`` merged with the method's
overlay ``configs/<method>.json`` and the CPU size ``configs/cpu.json``, as the bundle runs with
``--config_file "['configs/train.json','configs/<method>.json','configs/cpu.json']"``, its data loader replaced by
pre-made view batches) is timed against a plain PyTorch loop (prepare batch,
forward, loss, backward, step) over the same method definition, optimiser and
batches in the same process; rates are the batch size over the median time between
consecutive steps. The views are made once beforehand by the
bundle's own view transform, so neither measurement includes data loading or
augmentation; the ratio isolates the ignite/MONAI engine overhead.

Loaded by ``tools/bench.py`` (``make bench``), which registers :data:`BENCHMARKS`;
benchmark code lives with the tools, not in the installed ``cmrssl`` package.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

__all__ = ["BENCHMARKS", "pretraining_throughput"]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "cmr_ssp_pretraining"
sys.path.insert(0, str(REPO_ROOT / "common"))

from cmrssl.bundle_configs import config_files, method_overlays  # noqa: E402


def _row(metric: str, value, unit: str = "", note: str = "") -> dict:
    return {"benchmark": "ssl_pretrain_throughput", "metric": metric, "value": value, "unit": unit, "note": note}


def _parser(method: str, workdir: Path, image_size: int, overrides: Dict[str, object], bundle: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    # the base config, the method overlay, the CPU size (later files override), as `monai.bundle run` merges them
    parser.read_config([str(bundle / name) for name in config_files("train", method, cpu=True)])
    parser["bundle_root"] = str(bundle)
    parser["device"] = "cpu"
    parser["image_size"] = image_size
    parser["checkpoint"] = str(workdir / f"{method}.pt")
    parser["overwrite"] = True
    parser["output_dir"] = str(workdir / "runs" / method)
    for key, value in overrides.items():
        parser[key] = value
    return parser


class _Batches:
    """Pre-made batches as an opaque iterable (a plain list would be parsed as config items)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _premade_batches(views, num_batches: int, batch_size: int, image_size: int, seed: int = 0) -> list:
    """``num_batches`` collated batches of ``batch_size`` slices through the bundle's view transform."""
    import torch
    from monai.data import list_data_collate

    if hasattr(views, "set_random_state"):
        views.set_random_state(seed)
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        samples = []
        for index in range(batch_size):
            smooth = torch.nn.functional.avg_pool2d(
                torch.randn(1, 1, image_size, image_size, generator=generator), 5, stride=1, padding=2
            )[0]
            sample = {"image": (smooth - smooth.mean()) / (smooth.std() + 1e-6), "slice_position": index / batch_size}
            samples.append(views(sample))
        batches.append(list_data_collate(samples))
    return batches


def _median_step(marks: List[float], warmup: int) -> float:
    steps = [b - a for a, b in zip(marks[warmup:], marks[warmup + 1 :])]
    return statistics.median(steps)


def _method_throughput(
    method: str, workdir: Path, iterations: int, warmup: int, batch_size: int, image_size: int,
    overrides: Dict[str, object], bundle: Path,
) -> List[dict]:
    import torch
    from ignite.engine import Events

    config = _parser(method, workdir, image_size, overrides, bundle)
    batches = _premade_batches(config.get_parsed_content("views", instantiate=True), iterations, batch_size, image_size)

    # --- the bundle's trainer on the pre-made batches
    torch.manual_seed(0)
    config = _parser(method, workdir, image_size, overrides, bundle)
    config["train#dataloader"] = _Batches(batches)
    # checkpoint and event-file writing happen once per run, not per step: not throughput
    kept = [
        h for h in config.get("train#handlers", [])
        if not any(s in str(h.get("_target_", "")) for s in ("Checkpoint", "TensorBoard", "MLFlow"))
    ]
    config["train#handlers"] = kept
    config["train#trainer#epoch_length"] = len(batches)
    config["max_epochs"] = 1
    trainer = config.get_parsed_content("train#trainer", instantiate=True)
    # median time between consecutive iteration ends: the whole engine loop (batch fetch,
    # prepare_batch, step, handlers), robust to load spikes from other processes on the machine
    bundle_marks: List[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: bundle_marks.append(time.perf_counter()))
    trainer.run()
    bundle_rate = batch_size / _median_step(bundle_marks, warmup)

    # --- a plain PyTorch loop over a fresh copy of the same definitions
    torch.manual_seed(0)
    plain = _parser(method, workdir, image_size, overrides, bundle)
    model = plain.get_parsed_content("ssl_model", instantiate=True)
    optimizer = plain.get_parsed_content("optimizer", instantiate=True)
    update_teacher = getattr(model, "update_teacher", None)
    model.train()
    plain_marks: List[float] = []
    for batch in batches:
        inputs = model.prepare_batch(batch, torch.device("cpu"))
        optimizer.zero_grad(set_to_none=True)
        loss = model(inputs)["loss"]
        loss.backward()
        optimizer.step()
        if update_teacher is not None:  # DINO's EMA is part of its iteration
            update_teacher(0.996)
        plain_marks.append(time.perf_counter())
    plain_rate = batch_size / _median_step(plain_marks, warmup)

    setting = f"{batch_size} slices/batch, {image_size} px, median of {iterations - warmup - 1} steps, {torch.get_num_threads()} thread(s)"
    if overrides:
        setting += ", " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    return [
        _row(f"{method} bundle trainer", round(bundle_rate, 2), "slices/s", setting),
        _row(f"{method} plain PyTorch loop", round(plain_rate, 2), "slices/s", setting),
        _row(f"{method} ratio bundle / plain", round(bundle_rate / plain_rate, 3), "", "1.0 = no engine overhead"),
    ]


def pretraining_throughput(
    workdir: Path,
    methods: Optional[Sequence[str]] = None,
    iterations: int = 8,
    warmup: int = 2,
    batch_size: int = 16,
    image_size: Optional[int] = None,
    overrides: Optional[Dict[str, object]] = None,
    bundle: Optional[Path] = None,
) -> List[dict]:
    """Rows ``{"benchmark", "metric", "value", "unit", "note"}``: slices/s of each method's bundle
    trainer and of a plain PyTorch loop, and their ratio.

    Args:
        workdir: scratch folder (nothing is written there by default; checkpoint handlers are removed).
        methods: method overlays to time (default: every one the bundle has).
        iterations, warmup: steps run and steps excluded from the timing.
        batch_size: slices per batch (each slice gives the method's number of views).
        image_size: slice size in pixels (default: the bundle's, with ``configs/cpu.json``).
        overrides: config overrides for every method, after ``configs/cpu.json``.
        bundle: bundle folder (default: ``bundles/cmr_ssp_pretraining`` of this repository).
    """
    if iterations < warmup + 2:
        raise ValueError(f"iterations ({iterations}) must exceed warmup ({warmup}) by at least 2")
    workdir = Path(workdir) / "ssl_pretrain_throughput"
    workdir.mkdir(parents=True, exist_ok=True)
    bundle = Path(bundle or BUNDLE)
    if image_size is None:
        from monai.bundle import ConfigParser

        image_size = int(ConfigParser.load_config_files([str(bundle / f) for f in config_files("train", cpu=True)])[
            "image_size"])
    rows: List[dict] = []
    for method in list(method_overlays(bundle)) if methods is None else methods:
        rows += _method_throughput(method, workdir, iterations, warmup, batch_size, image_size, dict(overrides or {}),
                                   bundle)
    return rows


BENCHMARKS = {"ssl_pretrain_throughput": pretraining_throughput}
