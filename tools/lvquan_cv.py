"""Cross-validation of LVQuan configurations, then the optimal ensemble (Gessert & Schlaefer's protocol).

    python tools/lvquan_cv.py --dataset_dir DATA --workdir WORK [--configs densenet121_2d,densenet121_3d]
        [--num_folds 5] [--cpu] [--overrides '{"max_epochs": 50}'] [--top_k 6] [--seed 0] [--dry_run] [--overwrite]

For every named configuration and fold, runs the bundle's ``train`` then ``evaluate``
(``python -m monai.bundle run``, one fresh process each) into ``WORK/runs/<config>/fold<k>``,
each step's log kept beside its outputs (``train.log``, ``evaluate.log``);
a fold already trained (``model.pt``) or evaluated (``oof_predictions.npz``) is not run again, and an
interrupted training (``model.pt.partial/``) continues from its last epoch (resume). Then the
bundle's ensemble step (``cmrssl.engines.lvquan_ensemble.run_ensemble``, what
``configs/ensemble.json`` and ``tools/lvquan_ensemble.py`` run) chooses per-task subsets on half of
the patients and reports the other half: ``WORK/ensemble.json`` (refused when present unless
``--overwrite``). The named configurations (``--configs``) are the bundle's, listed under
``configurations`` in ``configs/ensemble.json``: config files applied after ``train.json``
(``evaluate.json`` is added for evaluation) and options they set. ``--cpu`` adds the bundle's CPU size,
``configs/cpu.json`` (pixel size, crop, patch and schedule of the README results), after them.
``--overrides`` (JSON) are passed to every run, e.g. ``{"max_epochs": 2, "batch_size": 4}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import fire

from cmrssl.bundle_configs import CPU_OVERLAY
from cmrssl.engines.lvquan_ensemble import run_ensemble
from cmrssl.flags import as_bool, retired_option_problems
from cmrssl.io.run_state import restart_options

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "cmr_lvquan_ensemble"

#: Named configurations, as the bundle lists them: ``{name: {"configs": [files after train.json],
#: "options": {option: value}}}`` (``--overrides`` still apply on top of the options).
CONFIGURATIONS: Dict[str, Dict[str, object]] = json.loads(
    (BUNDLE / "configs" / "ensemble.json").read_text())["configurations"]


def fold_commands(config: str, fold: int, dataset_dir: str, workdir: Path, num_folds: int, seed: int,
                  overrides: Dict[str, object], cpu: bool = False) -> List[List[str]]:
    """The train and evaluate command lines of one configuration and fold (``cpu``: at the bundle's CPU size)."""
    if config not in CONFIGURATIONS:
        raise ValueError(f"unknown configuration {config!r}; known: {sorted(CONFIGURATIONS)}")
    config_files, options = CONFIGURATIONS[config]["configs"], CONFIGURATIONS[config]["options"]
    files = [str(BUNDLE / "configs" / "train.json")] + [str(BUNDLE / "configs" / f) for f in config_files]
    out = workdir / "runs" / config / f"fold{fold}"
    common = ["--bundle_root", str(BUNDLE), "--dataset_dir", str(dataset_dir), "--fold", str(fold),
              "--num_folds", str(num_folds), "--seed", str(seed), "--output_dir", str(out)]
    for key, value in {**options, **overrides}.items():
        common += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    run = [sys.executable, "-m", "monai.bundle", "run", "--config_file"]
    cpu_size = [str(BUNDLE / CPU_OVERLAY)] if cpu else []
    return [run + [json.dumps(files + cpu_size)] + common,
            run + [json.dumps(files + [str(BUNDLE / "configs" / "evaluate.json")] + cpu_size)] + common]


def main(dataset_dir: str, workdir: str, configs: Sequence[str] = ("densenet121_2d", "densenet121_3d"),
         num_folds: int = 5, overrides: Optional[str] = None, top_k: int = 6, seed: int = 0,
         dry_run: bool = False, overwrite: bool = False, cpu: bool = False) -> None:
    configs = [c.strip() for c in (configs.split(",") if isinstance(configs, str) else configs) if c.strip()]
    try:
        extra = json.loads(overrides) if isinstance(overrides, str) else dict(overrides or {})
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        print(f"lvquan_cv: error: --overrides must be a JSON object such as '{{\"max_epochs\": 50}}'; "
              f"got {overrides!r} ({err})", file=sys.stderr)
        raise SystemExit(2)
    if not isinstance(extra, dict):
        print(f"lvquan_cv: error: --overrides must be a JSON object, got {overrides!r}", file=sys.stderr)
        raise SystemExit(2)
    retired = retired_option_problems(list(extra))
    if retired:  # the bundle would refuse them in every run: say so before any run starts
        print(f"lvquan_cv: error: --overrides: {'; '.join(retired)}", file=sys.stderr)
        raise SystemExit(2)
    work = Path(workdir).resolve()
    result_path = work / "ensemble.json"
    if result_path.exists() and not overwrite and not dry_run:
        print(f"lvquan_cv: error: {result_path} already exists (use --overwrite)", file=sys.stderr)
        raise SystemExit(1)
    try:
        plans = [(c, k, fold_commands(c, k, dataset_dir, work, num_folds, seed, extra, as_bool(cpu)))
                 for c in configs for k in range(num_folds)]
    except ValueError as err:
        print(f"lvquan_cv: error: {err}", file=sys.stderr)
        raise SystemExit(2)
    for config, fold, commands in plans:
        out = work / "runs" / config / f"fold{fold}"
        # A fold is resumed where it stopped: trained (model.pt + index_scale.json) and/or evaluated.
        done = [(out / "model.pt").exists() and (out / "index_scale.json").exists(),
                (out / "oof_predictions.npz").exists()]
        if not done[0]:  # an interrupted training continues where it stopped (cmrssl.io.run_state)
            commands[0] = commands[0] + restart_options(out / "model.pt")[0]
        for step, command, finished in zip(("train", "evaluate"), commands, done):
            if dry_run:
                print(("# done: " if finished else "") + " ".join(command))
                continue
            if finished:
                continue
            print(f"[lvquan_cv] {config} fold {fold}: {step}", flush=True)
            completed = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{step}.log").write_text(completed.stdout + completed.stderr)  # the run's whole log, kept
            if completed.returncode != 0:
                print(f"lvquan_cv: error: {config} fold {fold} failed (log: {out / (step + '.log')}):\n"
                      f"{completed.stderr[-3000:]}", file=sys.stderr)
                raise SystemExit(3)
    if dry_run:
        return
    run_ensemble([str(work / "runs" / c) for c in configs], str(result_path), top_k=top_k, seed=seed,
                 overwrite=overwrite)


if __name__ == "__main__":
    fire.Fire(main)
