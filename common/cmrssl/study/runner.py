"""Running the study's steps one after another, each a command whose log lies beside its outputs."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from cmrssl.bundle_configs import config_files
from cmrssl.io.atomic import atomic_file
from cmrssl.io.run_state import restart_options

from .arms import Repository
from .budgets import BUDGETS
from .plan import Step, run_configs, setting
from .split import say

__all__ = ["PROVENANCE", "StepFailed", "describe_plan", "estimate", "execute", "hms", "measure_rates",
           "read_provenance", "record_provenance", "restart", "set_aside_stale", "run_step", "stale_runs", "timings"]


#: beside a training's outputs (``OUT/runs/<arm>/n<N>_seed<S>/``): what it ran under
PROVENANCE = "provenance.json"


class StepFailed(RuntimeError):
    """A bundle run or data command exited with an error (its log is named)."""


def restart(step: Step) -> tuple:
    """Options and a note for a training that was interrupted (:func:`cmrssl.io.run_state.restart_options`)."""
    if step.checkpoint is None:
        return [], ""
    return restart_options(step.checkpoint)


def run_step(step: Step) -> float:
    """Run a step's commands (log beside its outputs); resume or restart an interrupted training."""
    step.folder.mkdir(parents=True, exist_ok=True)
    commands = [list(c) for c in step.commands]
    commands[-1] += restart(step)[0]
    log = step.folder / (step.name.replace(" ", "_") + ".log" if step.kind == "data" else f"{step.kind}.log")
    started = time.perf_counter()
    with open(log, "a") as handle:
        for command in commands:
            handle.write("$ " + " ".join(command) + "\n")
            handle.flush()
            completed = subprocess.run(command, cwd=step.cwd, stdout=handle, stderr=subprocess.STDOUT)
            if completed.returncode != 0:
                tail = log.read_text().splitlines()[-15:]
                raise StepFailed(f"{step.name} failed (exit {completed.returncode}); log {log}:\n" + "\n".join(tail))
    if not step.done_file.exists():
        raise StepFailed(f"{step.name}: finished without writing {step.done_file} (log {log})")
    return time.perf_counter() - started


def timings(out: Path) -> dict:
    """``{step name: {"kind", "seconds", "iterations"}}`` of the steps this output folder has run."""
    path = out / "timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def estimate(step: Step, known: dict, budget_name: str) -> float:
    """Seconds a step will take: the mean of finished steps of its kind, of its bundle where one has run (per
    iteration for trainings)."""
    same = [t for t in known.values() if t["kind"] == step.kind]
    same = [t for t in same if t.get("bundle") == step.cwd.name] or same
    if step.kind in ("train", "pretrain"):
        rates = [t["seconds"] / t["iterations"] for t in same if t.get("iterations")]
        if rates and step.iterations:
            return float(np.mean(rates)) * step.iterations
    elif same:
        return float(np.mean([t["seconds"] for t in same]))
    return float(BUDGETS[budget_name]["nominal_seconds"][step.kind])


def hms(seconds: float) -> str:
    minutes = int(round(seconds / 60.0))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def read_provenance(folder: Path) -> dict:
    """What the training in ``folder`` recorded when it started (:func:`record_provenance`); ``{}`` when nothing."""
    path = folder / PROVENANCE
    return json.loads(path.read_text()) if path.exists() else {}


def record_provenance(step: Step, provenance: dict) -> None:
    """``FOLDER/provenance.json`` of a training about to start: the commit, budget and config hash it runs under.
    A training resumed under another commit keeps its first and lists the others (``resumed_under``)."""
    path = step.folder / PROVENANCE
    known = read_provenance(step.folder) or dict(provenance)
    if known.get("commit") != provenance.get("commit") and provenance.get("commit") not in known.get("resumed_under", []):
        known.setdefault("resumed_under", []).append(provenance.get("commit"))
    step.folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(known, indent=1))


def stale_runs(steps: Sequence[Step], config_hashes: Dict[str, str]) -> Dict[Path, Tuple[str, str]]:
    """Run folder -> (the config hash it recorded, its arm's present one) for every training whose
    ``provenance.json`` records another hash than its arm's (``config_hashes``: arm -> hash); a folder with no
    record is not stale."""
    stale = {}
    for step in steps:
        if step.kind != "train":
            continue
        old = read_provenance(step.folder).get("config_hash", "")
        new = config_hashes.get(step.meta.get("arm"), "")
        if old and new and old != new:
            stale[step.folder] = (old, new)
    return stale


def set_aside_stale(steps: Sequence[Step], config_hashes: Dict[str, str]) -> List[Path]:
    """Rename the run folder of every training of :func:`stale_runs` to ``<folder>.hash-<old>``, so that it is
    trained again rather than taken as done under a recipe it did not run; returns the new names. Nothing is
    deleted: the old run stays beside the new one."""
    moved = []
    for folder, (old, new) in stale_runs(steps, config_hashes).items():
        target = folder.with_name(f"{folder.name}.hash-{old}")
        if target.exists():
            raise StepFailed(f"{folder} was run under config hash {old}, its arm's is now {new}, and {target} "
                             "exists already: move one of them away")
        folder.rename(target)
        say(f"{folder} was run under config hash {old}; its arm's is now {new}: kept as {target.name}, run again")
        moved.append(target)
    return moved


def execute(out: Path, steps: Sequence[Step], budget_name: str,
            after_eval: Optional[Callable[[Step], None]] = None,
            provenance: Optional[Callable[[Step], dict]] = None) -> None:
    """Run the steps not done yet, in order; ``after_eval`` is called after each evaluation (the tables grow as
    the runs finish), ``provenance(step)`` recorded beside each training (:func:`record_provenance`). A step is done
    when its output exists; an interrupted training continues."""
    todo = [s for s in steps if not s.done_file.exists()]
    say(f"{len(steps) - len(todo)} of {len(steps)} steps already done, {len(todo)} to run")
    started = time.perf_counter()
    for number, step in enumerate(todo, start=1):
        known = timings(out)
        left = sum(estimate(s, known, budget_name) for s in todo[number - 1:])
        say(f"step {number} of {len(todo)}: {step.name} (elapsed {hms(time.perf_counter() - started)}, "
            f"about {hms(left)} left)")
        if step.kind == "train" and provenance is not None:
            record_provenance(step, provenance(step))
        seconds = run_step(step)
        known[step.name] = {"kind": step.kind, "bundle": step.cwd.name, "seconds": round(seconds, 1),
                            "iterations": step.iterations}
        with atomic_file(out / "timings.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(known, indent=1))
        if step.kind == "eval" and after_eval is not None:
            after_eval(step)
    say(f"all {len(steps)} steps done in {hms(time.perf_counter() - started)}")


def describe_plan(steps: Sequence[Step], skipped: int, stale: Dict[Path, Tuple[str, str]],
                  rate: Optional[dict] = None) -> List[str]:
    """``--dry_run``'s lines: each step with its commands (``# done:`` before those done; how an interrupted
    training continues; why a ``stale`` one, :func:`stale_runs`, runs again), what ``skipped`` runs the ledger
    holds, and the training time at ``rate`` (:func:`measure_rates`), when given."""
    def to_run(step: Step) -> bool:
        return step.folder in stale or not step.done_file.exists()

    lines = []
    for step in steps:
        status = "" if to_run(step) else "# done: "
        flags, note = ([], "") if step.folder in stale else restart(step)  # set aside: starts afresh
        if step.folder in stale and step.kind == "train":
            old, new = stale[step.folder]
            note = f"run again: made under config hash {old}, its arm's is now {new}; set aside as " \
                   f"{step.folder.name}.hash-{old}"
        lines.append(f"{status}[{step.kind}] {step.name}" + (f" ({note})" if note else ""))
        lines += ["    " + " ".join(command[1:]) for command in step.commands[:-1] + [step.commands[-1] + flags]]
    iterations = sum(s.iterations for s in steps if s.kind in ("train", "pretrain") and to_run(s))
    evals = sum(1 for s in steps if s.kind == "eval" and to_run(s))
    if skipped:
        lines.append(f"\n{skipped} runs are in the ledger for this budget at their arms' config hashes: not planned.")
    lines.append(f"\n{len(steps)} steps: {sum(s.kind == 'pretrain' for s in steps)} pretrainings, "
                 f"{sum(s.kind == 'train' for s in steps)} trainings, {evals} evaluations to run; "
                 f"{iterations} training iterations.")
    if rate is not None:
        seconds = iterations * rate["seconds_per_iteration"]
        lines.append(f"Measured on {rate['device']}: {rate['seconds_per_iteration']:.3f} s per iteration of the U-Net "
                     f"(batch {rate['batch']}, forward + backward + step) -> about {seconds / 3600.0:.1f} hours of "
                     "training on this device, plus the evaluations (about 1-2 min each on a CPU). Pretraining "
                     "iterations are counted as U-Net iterations; two-view methods (SimCLR, PCL, DINO) cost about "
                     "twice that.")
    return lines


def measure_rates(repo: Repository, budget_name: str, repeats: int = 3) -> dict:
    """Seconds per training iteration of the fine-tuned U-Net at the budget's sizes, on this machine's device.

    A batch is ``frames_per_batch`` frames of 10 slices (ACDC's median stack), forward, loss and backward.
    """
    import torch

    from cmrssl.networks.unet import CMRUNet

    seg = repo.segmentation
    configs = run_configs(budget_name, seg, config_files("train"))
    channels = setting(seg, configs, [], "network_def#channels")
    patch = setting(seg, configs, [], "patch_size")
    frames = int(setting(seg, configs, [], "frames_per_batch"))
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    net = CMRUNet(1, 4, channels=channels).to(device)
    optimiser = torch.optim.AdamW(net.parameters(), 1e-3)
    batch = torch.randn(frames * 10, 1, *patch, device=device)
    target = torch.randint(0, 4, (frames * 10, *patch), device=device)

    def step():
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(batch), target).backward()
        optimiser.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"device": str(device), "seconds_per_iteration": (time.perf_counter() - started) / repeats,
            "batch": [frames * 10, 1, *patch]}
