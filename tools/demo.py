"""End-to-end demo on the phantom cohort: what `make demo` runs (a few minutes on 2 CPU cores).

    python tools/demo.py --workdir demo [--subjects 6] [--epochs 15] [--fresh]

Steps, each through the same entry points a user has:

1. phantom cohort (``cmrssl.data.phantom.generate_cohort``) -> ``WORKDIR/cohort``;
2. MONAI datalist of it (``cmrssl.data.phantom_index.index_phantom``), one
   subject held out as the test split -> ``WORKDIR/datalist.json``;
3. short training at the bundle's CPU size:
   ``python -m monai.bundle run --config_file "['configs/train.json','configs/cpu.json']" --max_epochs 15``
   -> ``WORKDIR/train/`` (checkpoint ``model.pt``);
4. inference on the held-out subject's DICOM folder:
   ``python -m monai.bundle run --config_file "['configs/inference.json','configs/cpu.json']"``
   -> ``WORKDIR/inference/``;
5. prints the function report next to the phantom's analytic truth, and the PNG paths.

Re-running: every step writes its output whole (temporary name, then rename),
so a finished step is recognised by its output and reused: a second run only
prints the report (seconds), and an interrupted run resumes at the step that
did not finish. A step's output from a different setting is refused (the
settings are stored in ``WORKDIR/demo.json``); ``--fresh`` deletes the
demo's own outputs in WORKDIR and starts over.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import fire

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "cmr_unet_segmentation"
sys.path.insert(0, str(REPO_ROOT / "common"))

from cmrssl.bundle_configs import config_files  # noqa: E402

STEPS = ("cohort", "datalist.json", "train", "inference", "demo.json")
# The bundle's CPU size (configs/cpu.json: network, pixel size, patch) for training and inference alike; the
# demo sets only its own length (--epochs). The bundle's defaults are sized for real studies on a GPU.
TRAIN_CONFIGS = json.dumps(config_files("train", cpu=True), separators=(",", ":"))
INFERENCE_CONFIGS = json.dumps(config_files("inference", cpu=True), separators=(",", ":"))
COMPARED = (  # (report key, analytic key, label, unit)
    ("lv_edv_ml", "edv_ml", "LV EDV", "ml"),
    ("lv_esv_ml", "esv_ml", "LV ESV", "ml"),
    ("lv_sv_ml", "sv_ml", "LV SV", "ml"),
    ("lv_ef_percent", "ef_percent", "LV EF", "%"),
    ("lv_mass_g", "lv_mass_g", "LV mass", "g"),
    ("rv_edv_ml", "rv_edv_ml", "RV EDV", "ml"),
    ("rv_esv_ml", "rv_esv_ml", "RV ESV", "ml"),
    ("ed_frame", "ed_frame", "ED frame", ""),
    ("es_frame", "es_frame", "ES frame", ""),
)


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _bundle_run(bundle: Path, config: str, *args: str) -> None:
    """``python -m monai.bundle run`` from the bundle folder, as a user would type it."""
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--bundle_root", str(bundle), *args]
    _say("$ " + " ".join(command[1:]))
    subprocess.run(command, cwd=bundle, check=True)


def _check_settings(workdir: Path, settings: dict) -> None:
    """Refuse to mix outputs made with other settings; record the settings of a new demo."""
    record = workdir / "demo.json"
    if record.exists():
        previous = json.loads(record.read_text())
        if previous != settings:
            raise FileExistsError(
                f"{workdir}: holds a demo made with {previous}, not {settings}; "
                "use another --workdir or pass --fresh to start over"
            )
        return
    leftovers = [name for name in STEPS if (workdir / name).exists()]
    if leftovers:
        raise FileExistsError(f"{workdir}: holds {leftovers} but no demo.json; pass --fresh to start over")
    workdir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings, indent=2))


def make_cohort(workdir: Path, subjects: int, seed: int, num_frames: int, image_size: int) -> Path:
    from cmrssl.data.phantom import generate_cohort

    cohort = workdir / "cohort"
    if (cohort / "cohort.json").exists():
        _say(f"cohort: reusing {cohort}")
        return cohort
    _say(f"cohort: {subjects} phantom studies ({num_frames} frames, {image_size} px) -> {cohort}")
    generate_cohort(cohort, num_subjects=subjects, seed=seed, num_frames=num_frames, image_size=image_size)
    return cohort


def make_datalist(workdir: Path, cohort: Path, seed: int) -> tuple:
    """The datalist (train/validation/test by subject) and the held-out test subject."""
    from cmrssl.data.phantom_index import index_phantom

    datalist = workdir / "datalist.json"
    if not datalist.exists():
        _say(f"datalist: indexing {cohort} -> {datalist}")
        index_phantom(cohort, datalist, seed=seed)
    else:
        _say(f"datalist: reusing {datalist}")
    splits = json.loads(datalist.read_text())
    test_subjects = sorted({r["subject"] for r in splits.get("test", [])})
    if not test_subjects:
        raise ValueError(f"{datalist}: no test subject to run inference on")
    return datalist, test_subjects[0]


def train(workdir: Path, cohort: Path, datalist: Path, epochs: int, bundle: Path = BUNDLE) -> Path:
    out = workdir / "train"
    checkpoint = out / "model.pt"
    if checkpoint.exists():
        _say(f"train: reusing {checkpoint}")
        return checkpoint
    from cmrssl.io.run_state import restart_options

    flags, note = restart_options(checkpoint)  # an interrupted demo training continues
    if "--resume" in flags:
        _say(f"train: {note}")
    else:  # nothing worth keeping: the demo's own folder starts over
        flags = []
        shutil.rmtree(out, ignore_errors=True)
    _bundle_run(
        bundle, TRAIN_CONFIGS, "--dataset_dir", str(cohort), "--datalist", str(datalist),
        "--output_dir", str(out), "--max_epochs", str(epochs), *flags,
    )
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: training finished without writing the checkpoint")
    return checkpoint


def infer(workdir: Path, cohort: Path, subject: str, checkpoint: Path, bundle: Path = BUNDLE) -> Path:
    out = workdir / "inference" / subject
    if (out / "function.json").exists():
        _say(f"inference: reusing {out}")
        return out
    _bundle_run(
        bundle, INFERENCE_CONFIGS, "--input", str(cohort / subject / "dicom" / "sax"),
        "--output_dir", str(out), "--checkpoint", str(checkpoint),
    )
    return out


def print_report(result: Path, analytic_path: Path) -> dict:
    report = json.loads((result / "function.json").read_text())
    analytic = json.loads(analytic_path.read_text())
    print()
    print(f"Cardiac function of {report.get('input')} (held-out phantom study)")
    if report.get("status") != "ok":
        print(f"  segmentation gave no function: {report.get('status')}")
    print(f"  {'':10s} {'predicted':>10s} {'analytic':>10s} {'error':>9s}")
    for key, truth_key, label, unit in COMPARED:
        predicted, truth = report.get(key), analytic.get(truth_key)
        if predicted is None or truth is None:
            print(f"  {label:10s} {'-':>10s} {truth if truth is not None else '-':>10} ")
            continue
        if key.endswith("_frame"):
            print(f"  {label:10s} {predicted:>10d} {truth:>10d} {predicted - truth:>+9d}")
        else:
            error = f"{100.0 * (predicted - truth) / truth:+.1f} %" if truth else "-"
            print(f"  {label:10s} {predicted:>7.1f} {unit:2s} {truth:>7.1f} {unit:2s} {error:>9s}")
    verdict = report.get("verdict", "ok")
    print(f"  verdict: {verdict}" + (": " + "; ".join(report.get("review_reasons", [])) if verdict != "ok" else ""))
    print()
    for name, file in sorted(report.get("files", {}).items()):
        print(f"  {name:18s} {result / file}")
    print()
    return report


def main(workdir: str = "demo", subjects: int = 6, epochs: int = 15, seed: int = 0, num_frames: int = 12,
         image_size: int = 96, threads: int = 2, fresh: bool = False, bundle: str = str(BUNDLE)) -> None:
    """Phantom cohort -> short training -> inference on a held-out DICOM study -> report vs analytic truth."""
    start = time.perf_counter()
    workdir = Path(workdir).resolve()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if fresh:
        for name in STEPS:
            target = workdir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    settings = {"subjects": subjects, "epochs": epochs, "seed": seed, "num_frames": num_frames, "image_size": image_size}
    _check_settings(workdir, settings)
    cohort = make_cohort(workdir, subjects, seed, num_frames, image_size)
    datalist, held_out = make_datalist(workdir, cohort, seed)
    bundle = Path(bundle).resolve()
    checkpoint = train(workdir, cohort, datalist, epochs, bundle)
    result = infer(workdir, cohort, held_out, checkpoint, bundle)
    print_report(result, cohort / held_out / "analytic.json")
    _say(f"done in {time.perf_counter() - start:.0f} s (workdir {workdir})")


if __name__ == "__main__":
    try:
        fire.Fire(main)
    except FileExistsError as refused:  # a clean refusal, not a traceback
        print(f"[demo] refused: {refused}", file=sys.stderr)
        sys.exit(2)
