"""Benchmarks (not tests): what `make bench` runs. Prints a table, writes WORKDIR/results.json.

    python tools/bench.py --workdir bench [--only NAME[,NAME]] [--threads 1]

A small registry of named benchmarks. Each is a function ``fn(workdir: Path) ->
list of rows`` where a row is ``{"benchmark", "metric", "value", "unit", "note"}``.
Register one with ``@benchmark("name")`` here, or, to keep engineers out of
each other's way, in a module ``tools/benchmarks/<anything>.py`` exposing
``BENCHMARKS = {"name": fn}`` (loaded automatically).

Built in:

- ``seg_train_throughput``: slices/s of the segmentation bundle's
  ``SupervisedTrainer`` (built from ``train.json`` by ``ConfigParser``, its
  data loader replaced by pre-made tensors) divided by a plain PyTorch loop
  (forward, loss, backward, step) on the same network definition, loss,
  optimizer, batch size and tensors, in the same process. Rates are the batch
  size over the median time between consecutive steps (robust to other
  processes on a shared machine).
- ``seg_inference``: wall-clock seconds and peak memory of
  ``configs/inference.json`` on one cine of 25 frames x 10 slices (a phantom
  study written as 4D NIfTI), run in a fresh subprocess; memory is the
  peak resident set size of the process (``ru_maxrss``) minus its resident
  size once the imports are done (``VmRSS``), plus the absolute peak.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import fire

REPO_ROOT = Path(__file__).resolve().parents[1]
SEG_BUNDLE = Path(os.environ.get("CMRSSL_SEG_BUNDLE", REPO_ROOT / "bundles" / "cmr_unet_segmentation"))
sys.path.insert(0, str(REPO_ROOT / "common"))

Row = Dict[str, object]
BENCHMARKS: Dict[str, Callable[[Path], List[Row]]] = {}


def benchmark(name: str):
    """Register ``fn(workdir) -> rows`` under ``name``."""

    def register(fn):
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} registered twice")
        BENCHMARKS[name] = fn
        return fn

    return register


def _load_plugins() -> None:
    folder = Path(__file__).resolve().parent / "benchmarks"
    for module_path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
        spec = importlib.util.spec_from_file_location(f"benchmarks_{module_path.stem}", module_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, fn in getattr(module, "BENCHMARKS", {}).items():
            benchmark(name)(fn)


def row(name: str, metric: str, value, unit: str = "", note: str = "") -> Row:
    return {"benchmark": name, "metric": metric, "value": value, "unit": unit, "note": note}


# ------------------------------------------------------------------ segmentation training
def _premade_batches(num_batches: int, batch_size: int, spatial, num_classes: int, seed: int = 0):
    """Pre-made 2D slices ``[B, 1, H, W]`` (smooth blobs, z-scored) and labels ``[B, 1, H, W]``."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        image = torch.randn((batch_size, 1, *spatial), generator=generator)
        label = torch.randint(0, num_classes, (batch_size, 1, *spatial), generator=generator).float()
        batches.append({"image": image, "label": label})
    return batches


@benchmark("seg_train_throughput")
def seg_train_throughput(workdir: Path, iterations: int = 24, warmup: int = 3) -> List[Row]:
    import numpy as np
    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    name = "seg_train_throughput"

    def parser():
        p = ConfigParser()
        p.read_config(str(SEG_BUNDLE / "configs" / "train.json"))
        p["bundle_root"] = str(SEG_BUNDLE)
        p["output_dir"] = str(workdir / "seg_train")  # checkpoints/logs of the trainer, if any, stay here
        p["device"] = "cpu"
        return p

    config = parser()
    batch_size = int(config.get_parsed_content("train#dataloader#batch_size", instantiate=True))
    spatial = [int(s) for s in config.get_parsed_content("patch_size", instantiate=True)]
    num_classes = int(config.get_parsed_content("num_classes", instantiate=True))
    batches = _premade_batches(iterations, batch_size, spatial, num_classes)
    samples = [{"image": b["image"][i], "label": b["label"][i]} for b in batches for i in range(batch_size)]

    # --- the bundle's trainer, fed the same tensors (no disk, no random transforms)
    torch.manual_seed(0)
    config["train#dataloader"] = torch.utils.data.DataLoader(samples, batch_size=batch_size, shuffle=False)
    handlers = config.get("train#handlers", [])
    # Validation and checkpoint/TensorBoard writing happen once per epoch, not per step: not throughput.
    kept = [h for h in handlers if not any(s in str(h.get("_target_", "")) for s in ("Validation", "Checkpoint", "TensorBoard", "MLFlow"))]
    config["train#handlers"] = kept
    config["train#trainer#max_epochs"] = 1
    trainer = config.get_parsed_content("train#trainer", instantiate=True)
    # Median time between consecutive iteration ends: the whole engine loop (batch fetch,
    # prepare_batch, step, handlers), robust to load spikes from other processes on the machine.
    bundle_marks: List[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: bundle_marks.append(time.perf_counter()))
    trainer.run()
    bundle_rate = batch_size / statistics.median(np.diff(bundle_marks[warmup:]))

    # --- a plain PyTorch loop on a fresh copy of the same definition
    torch.manual_seed(0)
    plain = parser()
    network = plain.get_parsed_content("network", instantiate=True)
    loss_function = plain.get_parsed_content("loss", instantiate=True)
    optimizer = plain.get_parsed_content("optimizer", instantiate=True)
    network.train()
    plain_marks: List[float] = []
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(network(batch["image"]), batch["label"])
        loss.backward()
        optimizer.step()
        plain_marks.append(time.perf_counter())
    plain_rate = batch_size / statistics.median(np.diff(plain_marks[warmup:]))

    setting = f"batch {batch_size}, {spatial[0]}x{spatial[1]}, median of {iterations - warmup - 1} steps, {torch.get_num_threads()} threads"
    return [
        row(name, "bundle trainer", round(bundle_rate, 2), "slices/s", setting),
        row(name, "plain PyTorch loop", round(plain_rate, 2), "slices/s", setting),
        row(name, "ratio bundle / plain", round(bundle_rate / plain_rate, 3), "", "1.0 = no engine overhead"),
    ]


# ------------------------------------------------------------------ segmentation inference
_INFERENCE_CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[5]))
from monai.bundle import ConfigWorkflow
import cmrssl.engines.cine_inference  # imports counted in the baseline
# baseline: resident memory now (not ru_maxrss, whose peak may already have been set by the imports)
baseline_kib = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
workflow = ConfigWorkflow(config_file=sys.argv[1], workflow_type="infer", bundle_root=sys.argv[2],
                          input=sys.argv[3], output_dir=sys.argv[4], checkpoint=sys.argv[6], overwrite=True)
start = time.perf_counter()
workflow.initialize()
workflow.run()
seconds = time.perf_counter() - start
workflow.finalize()
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "baseline_kib": baseline_kib, "peak_kib": peak_kib}))
"""


def _bench_cine(folder: Path, frames: int = 25, slices: int = 10, size: int = 128) -> Path:
    """A phantom cine cropped to ``frames x slices`` as a 4D NIfTI (made once, reused)."""
    from cmrssl.data.phantom import generate_subject
    from cmrssl.io import CineStudy, write_cine_nifti

    path = folder / f"cine_{frames}x{slices}_{size}px.nii.gz"
    if path.exists():
        return path
    sax = generate_subject(7, num_frames=frames, image_size=size).sax
    first = max(0, (sax.num_slices - slices) // 2)
    keep = slice(first, first + slices)
    study = CineStudy(
        pixels=sax.pixels[:, keep], slice_affines=sax.slice_affines[keep], slice_spacing_mm=sax.slice_spacing_mm,
        trigger_times_ms=sax.trigger_times_ms, source="bench",
    )
    if study.num_slices != slices:
        raise RuntimeError(f"phantom has {sax.num_slices} slices, fewer than {slices}")
    folder.mkdir(parents=True, exist_ok=True)
    write_cine_nifti(study, path)
    return path


def _random_checkpoint(path: Path) -> Path:
    """Randomly initialised weights of the bundle's network (timing does not depend on training)."""
    import torch
    from monai.bundle import ConfigParser

    if not path.exists():
        config = ConfigParser()
        config.read_config(str(SEG_BUNDLE / "configs" / "inference.json"))
        torch.manual_seed(0)
        network = config.get_parsed_content("network_def", instantiate=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(network.state_dict(), path)
    return path


@benchmark("seg_inference")
def seg_inference(workdir: Path, threads: int = 1) -> List[Row]:
    name = "seg_inference"
    cine = _bench_cine(workdir / "seg_inference")
    checkpoint = _random_checkpoint(workdir / "seg_inference" / "random_model.pt")
    command = [
        sys.executable, "-c", _INFERENCE_CHILD, str(SEG_BUNDLE / "configs" / "inference.json"), str(SEG_BUNDLE),
        str(cine), str(workdir / "seg_inference" / "output"), str(threads), str(checkpoint),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=str(SEG_BUNDLE))
    if result.returncode != 0:
        raise RuntimeError(f"inference benchmark failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    setting = f"25 frames x 10 slices, 128x128 px, CPU, {threads} thread(s)"
    return [
        row(name, "seconds per cine", round(measured["seconds"], 2), "s", setting + " (read + segment + write + report)"),
        row(name, "peak RSS growth", round((measured["peak_kib"] - measured["baseline_kib"]) / 1024, 1), "MiB",
            "peak RSS (ru_maxrss) minus RSS after imports (VmRSS)"),
        row(name, "peak RSS", round(measured["peak_kib"] / 1024, 1), "MiB", "whole process incl. torch"),
    ]


# ------------------------------------------------------------------ command line
def _print_table(rows: List[Row]) -> None:
    headers = ("benchmark", "metric", "value", "unit", "note")
    widths = [max(len(str(h)), *(len(str(r[h])) for r in rows)) for h in headers]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(r[h]).ljust(w) for h, w in zip(headers, widths)))


def main(workdir: str = "bench", only: str = "", threads: int = 1) -> None:
    """Run the benchmarks (all, or those named in --only, comma-separated) and write WORKDIR/results.json."""
    import torch

    _load_plugins()
    torch.set_num_threads(int(threads))
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else list(only)) if n.strip()] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}")
    rows: List[Row] = []
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        start = time.perf_counter()
        rows.extend(BENCHMARKS[name](workdir))
        print(f"[bench] {name} done in {time.perf_counter() - start:.1f} s", flush=True)
    _print_table(rows)
    results_path = workdir / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}
    results = dict(previous.get("results", {}))
    for name in names:
        results[name] = [r for r in rows if r["benchmark"] == name]
    payload = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "threads": int(threads),
                    "torch": torch.__version__},
        "results": results,
    }
    tmp = results_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(results_path)
    print(f"results: {results_path}")


if __name__ == "__main__":
    fire.Fire(main)
