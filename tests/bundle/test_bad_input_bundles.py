"""Bad-input audit, bundles through ``python -m monai.bundle run``: a stopped training never looks finished
and resumes, options and datalists are checked before any work, errors end with the message that names
the problem, inference writes only inside its output folder (issue 10; docs/reliability.md)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from bundle_cli import bundle_command, bundle_env as _env, last_line as _last_line, phantom_datalist
from bundle_cli import run_bundle as _run
from cmrssl.io.atomic import safe_folder_name

REPO_ROOT = Path(__file__).resolve().parents[2]
SEGMENTATION = REPO_ROOT / "bundles" / "cmr_unet_segmentation"
PRETRAINING = REPO_ROOT / "bundles" / "cmr_ssp_pretraining"
TINY = {"pixdim_mm": "[3.5, 3.5]", "patch_size": "[48, 48]", "network_def#channels": "[4, 8, 16, 32]",
        "num_workers": "0"}


def _command(bundle: Path, config: str, **options) -> list:
    return bundle_command(config, **options)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Four phantom subjects of four frames (2 training, 1 validation, 1 test) and their datalist."""
    return phantom_datalist(tmp_path_factory.mktemp("bad_input_cohort"), num_subjects=4)


def _wait_for_saved_epoch(run_json: Path, process: subprocess.Popen, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "training ended before it could be stopped"
        try:
            state = json.loads(run_json.read_text())
            if state.get("saved_epoch", 0) >= 1:
                return state
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{run_json}: no epoch saved within {timeout} s")


@pytest.fixture(scope="module")
def killed_training(cohort, tmp_path_factory):
    """A segmentation training stopped with SIGKILL after its first saved epoch."""
    out = tmp_path_factory.mktemp("killed")
    _train_and_kill_after_first_saved_epoch(SEGMENTATION, datalist=cohort, output_dir=out, max_epochs=200, **TINY)
    return out


def _train_and_kill_after_first_saved_epoch(bundle: Path, **options) -> None:
    """Start ``configs/train.json`` and SIGKILL it once ``run.json`` records a saved epoch."""
    process = subprocess.Popen(_command(bundle, "configs/train.json", **options), cwd=str(bundle),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        _wait_for_saved_epoch(Path(options["output_dir"]) / "model.pt.partial" / "run.json", process)
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_killed_training_leaves_no_finished_model_and_a_rerun_says_how_to_resume(killed_training, cohort):
    out = killed_training
    assert not (out / "model.pt").exists()  # before: the best-metric save was a model.pt that looked finished
    assert (out / "model.pt.partial" / "last.pt").is_file()
    again = _run(SEGMENTATION, "configs/train.json", datalist=cohort, output_dir=out, max_epochs=2, **TINY)
    assert again.returncode != 0
    assert "holds an unfinished training run" in _last_line(again) and "--resume true" in _last_line(again)


@pytest.mark.slow
def test_evaluation_of_a_killed_training_names_the_unfinished_run(killed_training, cohort, tmp_path):
    result = _run(SEGMENTATION, "['configs/train.json','configs/evaluate.json']", datalist=cohort,
                  checkpoint=killed_training / "model.pt", output_dir=tmp_path / "eval", **TINY)
    assert result.returncode != 0
    assert "checkpoint not found" in _last_line(result) and "unfinished training run" in _last_line(result)
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_resume_finishes_a_killed_training(killed_training, cohort):
    out = killed_training
    saved = json.loads((out / "model.pt.partial" / "run.json").read_text())["saved_epoch"]
    done = _run(SEGMENTATION, "configs/train.json", datalist=cohort, output_dir=out, max_epochs=saved + 1,
                resume="true", **TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert f"resuming {out / 'model.pt.partial'} from epoch {saved} of {saved + 1}" in log
    assert f"Epoch[{saved + 1}] Complete" in log and "Epoch[1] Complete" not in log
    assert not (out / "model.pt.partial").exists()
    state = torch.load(out / "model.pt", weights_only=True)
    assert any(k.startswith("encoder.") for k in state)
    nothing = _run(SEGMENTATION, "configs/train.json", datalist=cohort, output_dir=out, resume="true", **TINY)
    assert nothing.returncode != 0 and "no unfinished training run to resume" in _last_line(nothing)


@pytest.mark.slow
def test_interrupted_pretraining_leaves_no_checkpoint(cohort, tmp_path):
    out = tmp_path / "mim"
    command = _command(PRETRAINING, "['configs/train.json','configs/mim.json']", datalist=cohort,
                       checkpoint=out / "mim.pt", output_dir=out / "runs", max_epochs=200, frames_per_batch=2,
                       image_size=64, pixdim_mm="[5.0, 5.0]", mask_patch_size="[16, 16]", num_workers=0,
                       **{"network_def#channels": "[4, 8, 16, 32]"})
    log = tmp_path / "mim.log"
    with log.open("w") as handle:
        # Ctrl-C reaches the run as in a terminal: a test worker may ignore SIGINT, and an ignored signal
        # stays ignored across exec (Python then installs no KeyboardInterrupt handler and trains on)
        process = subprocess.Popen(command, cwd=str(PRETRAINING), stdout=handle, stderr=subprocess.STDOUT, env=_env(),
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_saved_epoch(out / "mim.pt.partial" / "run.json", process)
        process.send_signal(signal.SIGINT)  # Ctrl-C
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0 and "KeyboardInterrupt" in log.read_text()
    assert not (out / "mim.pt").exists()  # before: interval saves wrote mim.pt during training
    again = subprocess.run(command, cwd=str(PRETRAINING), capture_output=True, text=True, timeout=300, env=_env())
    assert again.returncode != 0
    assert "holds an unfinished training run (stopped, last saved after epoch" in _last_line(again)


def _datalist_variant(cohort: Path, folder: Path, change) -> Path:
    content = json.loads(cohort.read_text())
    change(content)
    path = folder / "datalist.json"
    path.write_text(json.dumps(content))
    return path


@pytest.mark.slow
def test_validation_subjects_that_are_also_trained_on_are_refused(cohort, tmp_path):
    def leak(content):
        content["validation"].append(content["training"][0])

    subject = json.loads(cohort.read_text())["training"][0]["subject"]
    result = _run(SEGMENTATION, "configs/train.json", datalist=_datalist_variant(cohort, tmp_path, leak),
                  output_dir=tmp_path / "models", max_epochs=1, **TINY)
    assert result.returncode != 0
    assert f"subjects {subject} are in both the training and the validation records" in _last_line(result)


@pytest.mark.slow
def test_a_missing_image_in_the_datalist_is_named_before_training(cohort, tmp_path):
    missing = tmp_path / "gone" / "frame_00.nii.gz"

    def lose(content):
        content["training"][1]["image"] = str(missing)

    result = _run(SEGMENTATION, "configs/train.json", datalist=_datalist_variant(cohort, tmp_path, lose),
                  output_dir=tmp_path / "models", max_epochs=1, **TINY)
    assert result.returncode == 1  # before: 134, "terminate called" from a data-loading thread
    assert "record 1 of 'training'" in _last_line(result) and f"image {missing} does not exist" in _last_line(result)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(SEGMENTATION / "configs" / "inference.json"))
    parser["network_def#channels"] = [4, 8, 16, 32]
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_checkpoint") / "model.pt"
    torch.save(parser.get_parsed_content("network_def", instantiate=True).state_dict(), path)
    return path


@pytest.mark.slow
def test_inference_keeps_datalist_subjects_inside_the_output_folder(cohort, tiny_checkpoint, tmp_path):
    records = json.loads(cohort.read_text())

    def hostile(content):
        content["test"] = ([dict(r, subject="../../escape") for r in records["test"]]
                           + [dict(r, subject=str(tmp_path / "absolute")) for r in records["validation"]])

    datalist = _datalist_variant(cohort, tmp_path, hostile)
    out = tmp_path / "deep" / "inference"
    out.mkdir(parents=True)
    (out / "mine.txt").write_text("the user's")
    (out / "escape").mkdir()
    (out / "escape" / "stale.txt").write_text("an earlier run's folder of that name")
    (out / "subjects.json").write_text(json.dumps([{"folder": "escape"}]))
    result = _run(SEGMENTATION, "configs/inference.json", datalist=datalist, output_dir=out,
                  checkpoint=tiny_checkpoint, overwrite="true", write_plots="false", pixdim_mm="[3.5, 3.5]",
                  **{"network_def#channels": "[4, 8, 16, 32]"})
    assert result.returncode == 0, result.stderr[-3000:]
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents and p.name != "datalist.json"]
    assert outside == [], "inference wrote outside --output_dir"
    absolute = safe_folder_name(tmp_path / "absolute")
    assert sorted(p.name for p in out.iterdir()) == sorted(["escape", "mine.txt", "subjects.json", absolute])
    mapping = {m["folder"]: m["subject"] for m in json.loads((out / "subjects.json").read_text())}
    assert mapping["escape"] == "../../escape" and str(tmp_path / "absolute") in mapping.values()
    for folder in mapping:
        assert (out / folder / "segmentation.nii.gz").is_file() and out in (out / folder).resolve().parents
    assert not (out / "escape" / "stale.txt").exists()  # the earlier run's folder was replaced, not merged
    assert (out / "mine.txt").read_text() == "the user's"


@pytest.mark.slow
def test_inference_refuses_an_output_folder_holding_its_input(cohort, tiny_checkpoint):
    cine = Path(json.loads(cohort.read_text())["test"][0]["cine"])
    before = sorted(p.name for p in cine.parent.iterdir())
    result = _run(SEGMENTATION, "configs/inference.json", input=cine, output_dir=cine.parent, overwrite="true",
                  checkpoint=tiny_checkpoint, **{"network_def#channels": "[4, 8, 16, 32]"})
    assert result.returncode != 0 and "contains the input" in _last_line(result)
    assert sorted(p.name for p in cine.parent.iterdir()) == before  # before: 84 input files deleted


@pytest.mark.slow
def test_a_method_name_that_is_a_path_is_refused_before_anything_is_written(cohort, tmp_path):
    root = tmp_path / "user" / "bundle"  # models/../../x.pt would be tmp_path/user/x.pt
    (root / "models").mkdir(parents=True)
    mine = tmp_path / "user" / "x.pt"
    mine.write_text("the user's own file")
    result = _run(PRETRAINING, "['configs/train.json','configs/simclr.json']", timeout=300, bundle_root=root,
                  datalist=cohort, method_name="../../x", overwrite="true", max_epochs=1, frames_per_batch=2,
                  image_size=32, pixdim_mm="[5.0, 5.0]", num_workers=0, **{"network_def#channels": "[4, 8, 16, 32]"})
    assert result.returncode == 1
    # before: the checkpoint went to models/../../x.pt, replacing the user's file with --overwrite true
    assert _last_line(result).startswith(
        "error: ValueError: bad option: --method_name must be a plain name (letters, digits, '.', '_', '-'; no path")
    assert _last_line(result).endswith("got '../../x'")
    assert mine.read_text() == "the user's own file" and "Epoch[" not in result.stdout + result.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert written == ["user", "user/bundle", "user/bundle/models", "user/x.pt"]


RANKING = REPO_ROOT / "bundles" / "cmr_ranking_ssl"
RANKING_TINY = {"train_split": "['training','validation']", "num_labelled_subjects": 1, "pixdim_mm": "[5.0, 5.0]",
                "roi_size": 32, "num_workers": 0, "supervised_steps": 1, "ranking_steps": 1, "max_frames": 4,
                "nested_slices": 2}


#: (bundle, tiny options, bad options, the one error line that names them all); before, the segmentation bundle's
#: failed with a TypeError after data caching, or trained on everyone for -1
BAD_OPTIONS = {
    "segmentation": (SEGMENTATION, TINY, {"max_epochs": "abc", "learning_rate": "abc", "num_labelled_subjects": -1},
                     "error: ValueError: bad options: --num_labelled_subjects must be >= 0, got -1; "
                     "--max_epochs must be a whole number, got 'abc'; --learning_rate must be a number, got 'abc'"),
    "ranking consistency": (RANKING, RANKING_TINY,
                            {"invariance_slices": -1, "invariance_rotate_deg": -5, "invariance_zoom": "[0.8]"},
                            "error: ValueError: bad options: --invariance_slices must be >= 0, got -1; "
                            "--invariance_rotate_deg must be >= 0, got -5; "
                            "--invariance_zoom must be a list of 2 numbers, got [0.8]"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_options_are_refused_before_any_work_each_named(case, cohort, tmp_path):
    bundle, tiny, bad, message = BAD_OPTIONS[case]
    out = tmp_path / "out"
    result = _run(bundle, "configs/train.json", datalist=cohort, output_dir=out, **{**tiny, **bad})
    assert result.returncode != 0
    assert _last_line(result) == message  # one run names every bad option
    assert "Epoch[" not in result.stdout + result.stderr and not out.exists()


@pytest.mark.slow
def test_resuming_with_another_backbone_names_the_option_and_the_file(cohort, tmp_path):
    out = tmp_path / "ranking"
    _train_and_kill_after_first_saved_epoch(RANKING, datalist=cohort, output_dir=out, max_epochs=200,
                                            backbone="resnet10_small", **RANKING_TINY)
    state = (out / "model.pt.partial" / "run.json").read_text()
    result = _run(RANKING, "configs/train.json", timeout=300, datalist=cohort, output_dir=out, max_epochs=300,
                  backbone="resnet18", resume="true", **RANKING_TINY)
    assert result.returncode == 1
    # before: torch's "Error(s) in loading state_dict for ...", then one "size mismatch for ..." line per weight
    last = _last_line(result)
    assert last.startswith(f"error: ValueError: {out / 'model.pt.partial' / 'last.pt'}: the unfinished training "
                           "run was made with a different network than this run builds (network: "), last
    assert "such as --backbone" in last and "--overwrite true" in last and "size mismatch" not in last
    assert (out / "model.pt.partial" / "run.json").read_text() == state and not (out / "model.pt").exists()


@pytest.mark.slow
def test_a_refused_checkpoint_is_named_on_the_last_line(cohort, tmp_path):
    import pathlib

    pickled = tmp_path / "pickled.pt"
    torch.save({"network": pathlib.PurePosixPath("not a tensor")}, pickled)  # weights_only=True refuses it
    (tmp_path / "text.pt").write_text("not a checkpoint")
    last = {}
    for checkpoint in (pickled, tmp_path / "text.pt"):
        result = _run(SEGMENTATION, "['configs/train.json','configs/evaluate.json']", datalist=cohort,
                      checkpoint=checkpoint, output_dir=tmp_path / "eval", **TINY)
        assert result.returncode == 1
        last[checkpoint.name] = _last_line(result)
        # before: torch's last paragraph ("Check the documentation of torch.load ...") or "error: KeyError: 101"
        assert last[checkpoint.name].startswith(f"error: ValueError: {checkpoint}: not a readable PyTorch checkpoint (")
    assert "weights_only=True refuses (Unsupported global: GLOBAL pathlib.PurePosixPath" in last["pickled.pt"]
    assert not (tmp_path / "eval").exists()
