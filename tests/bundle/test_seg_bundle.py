"""cmr_unet_segmentation training and evaluation through `python -m monai.bundle run` on a tiny phantom cohort,
fine-tuning modes from pretraining checkpoints, model zoo / MONAI Label contracts, DDP on CPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "cmr_unet_segmentation"
CHANNELS = "[4, 8, 16, 32]"
# CPU-sized: the phantom's 165 mm field at 3.5 mm is 48 px, one 48 px patch per slice, a narrow U-Net.
TINY = {
    "pixdim_mm": "[3.5, 3.5]",
    "patch_size": "[48, 48]",
    "network_def#channels": CHANNELS,
    "num_workers": "0",
    "max_epochs": "1",
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Four phantom subjects of four frames (2 training, 1 validation, 1 test) and their datalist."""
    from cmrssl.data.phantom import generate_cohort
    from cmrssl.data.phantom_index import index_phantom

    root = tmp_path_factory.mktemp("seg_cohort")
    generate_cohort(root / "cohort", num_subjects=4, seed=3, num_frames=4, image_size=48, write_dicom=False)
    datalist = root / "datalist.json"
    index_phantom(root / "cohort", datalist, seed=0)
    return datalist


def _run(config, *args: str, launcher=None, timeout=600, **overrides) -> subprocess.CompletedProcess:
    command = list(launcher or [sys.executable]) + ["-m", "monai.bundle", "run", "--config_file", config]
    for key, value in {**TINY, **overrides}.items():
        command += [f"--{key}", str(value)]
    command += list(args)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, cwd=str(BUNDLE), capture_output=True, text=True, timeout=timeout, env=env)


def _train(datalist: Path, out: Path, *args: str, **overrides) -> subprocess.CompletedProcess:
    return _run("configs/train.json", "--datalist", str(datalist), "--output_dir", str(out), *args, **overrides)


def _tiny_network(out_channels: int = 4):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["network_def#channels"] = json.loads(CHANNELS)
    parser["network_def#out_channels"] = out_channels
    return parser.get_parsed_content("network_def", instantiate=True)


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory):
    """One epoch from scratch: the checkpoint the evaluation and export tests use."""
    out = tmp_path_factory.mktemp("seg_train")
    result = _train(cohort, out)
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result.stdout + result.stderr


@pytest.mark.slow
def test_training_from_scratch_writes_the_best_checkpoint(trained):
    out, log = trained
    assert "val_mean_dice" in log and "train_loss" in log
    state = torch.load(out / "model.pt", weights_only=True)
    assert set(state) == set(_tiny_network().state_dict())


@pytest.mark.slow
def test_existing_checkpoint_is_refused_before_training(cohort, tmp_path):
    (tmp_path / "model.pt").write_bytes(b"keep me")
    result = _train(cohort, tmp_path)
    assert result.returncode != 0 and "model.pt already exists" in result.stderr
    assert (tmp_path / "model.pt").read_bytes() == b"keep me"
    assert "train_loss" not in result.stdout + result.stderr


@pytest.mark.slow
def test_few_label_training_uses_exactly_the_requested_subjects(cohort, tmp_path):
    from cmrssl.data.subsets import labelled_training_records

    # tracking when asked: TensorBoard and MLflow (MONAI's --tracking) in the same run
    result = _train(cohort, tmp_path, "--tracking", "mlflow", num_labelled_subjects=1, use_tensorboard="true")
    assert result.returncode == 0, result.stderr[-4000:]
    assert list((tmp_path / "runs").glob("events.out.tfevents*")), "TensorBoard asked for but not written"
    assert (tmp_path / "mlruns.db").is_file(), "MLflow asked for but not written"
    records = labelled_training_records(cohort, "training", "", 1, 0)
    subjects = {r["subject"] for r in records}
    assert len(subjects) == 1
    assert f"few-label training on 1 subjects (seed 0): {subjects.pop()}" in result.stdout + result.stderr
    too_many = _train(cohort, tmp_path / "b", num_labelled_subjects=3)
    assert too_many.returncode != 0 and "asked for 3 labelled subjects but only 2" in too_many.stderr


@pytest.mark.slow
def test_validating_without_choosing_keeps_the_last_model(cohort, tmp_path):
    result = _train(cohort, tmp_path / "out", "--select_on_validation", "false", max_epochs=2)
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stdout + result.stderr
    assert log.count("val_mean_dice:") >= 2  # validated after each epoch: a curve to watch
    assert "training finished: model after epoch 2 saved as" in log  # but the validation labels chose nothing


@pytest.mark.slow
def test_training_without_a_validation_split_keeps_the_last_model(cohort, tmp_path):
    splits = json.loads(cohort.read_text())
    datalist = tmp_path / "no_validation.json"
    datalist.write_text(json.dumps({"training": splits["training"], "test": splits["test"]}))
    result = _train(datalist, tmp_path / "out", max_epochs=2)
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stdout + result.stderr
    assert "training without validation" in log and "val_mean_dice" not in log
    assert "training finished: model after epoch 2 saved as" in log
    assert not (tmp_path / "out" / "model.pt.partial").exists()
    assert set(torch.load(tmp_path / "out" / "model.pt", weights_only=True)) == set(_tiny_network().state_dict())


def _pretrained_checkpoint(path: Path, parts=("encoder",)) -> dict:
    """A checkpoint shaped like cmr_ssp_pretraining's (MIM: encoder, decoder and its 1-channel head as pretext_head)."""
    torch.manual_seed(7)
    network = _tiny_network(out_channels=1).state_dict()
    state = {k: v for k, v in network.items() if k.startswith(tuple(f"{p}." for p in parts))}
    if "pretext_head" in parts:
        state.update({f"pretext_{k}": v for k, v in network.items() if k.startswith("head.")})
    torch.save(state, path)
    return state


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["decoder", "all", "multitask"])
def test_finetuning_from_a_pretrained_checkpoint(cohort, tmp_path, mode):
    pretrained = _pretrained_checkpoint(tmp_path / "mim.pt", parts=("encoder", "decoder", "pretext_head"))
    out = tmp_path / "out"
    result = _train(cohort, out, pretrained_checkpoint=tmp_path / "mim.pt", finetune_mode=mode)
    assert result.returncode == 0, result.stderr[-4000:]
    trained = torch.load(out / "model.pt", weights_only=True)
    encoder = [k for k in pretrained if k.startswith("encoder.")]
    # a pretrained start's convolutions that feed a norm begin at the fresh network's norms, in the same direction
    # (cmrssl.networks.checkpoint.match_initial_scale): frozen, they keep that direction; the rest stays as loaded
    from cmrssl.networks.checkpoint import scale_free_weights

    scale_free = set(scale_free_weights(_tiny_network()))

    def kept(key):
        if key in scale_free:
            return torch.allclose(trained[key] / trained[key].norm(), pretrained[key] / pretrained[key].norm(),
                                  atol=1e-6)
        return torch.equal(trained[key], pretrained[key])

    unchanged = [kept(k) for k in encoder]
    if mode == "decoder":
        assert all(unchanged), "the encoder must stay frozen"
        assert any(k in scale_free for k in encoder)
        assert any(not torch.equal(trained[k], pretrained[k]) for k in pretrained if k.startswith("decoder."))
    else:
        assert not all(unchanged), f"every weight trains in '{mode}' mode"
    pretext = [k for k in trained if k.startswith("pretext_head.")]
    if mode == "multitask":  # the pretext head was kept and trained with the beta-weighted loss
        assert pretext and any(not torch.equal(trained[k], pretrained[k]) for k in pretext)
    else:
        assert not pretext
    # whatever the mode, the model serves the inference config's plain U-Net
    from cmrssl.networks.checkpoint import load_network_checkpoint

    load_network_checkpoint(_tiny_network(), out / "model.pt")


@pytest.mark.slow
def test_multitask_needs_a_pixelwise_pretext_head(cohort, tmp_path):
    _pretrained_checkpoint(tmp_path / "simclr.pt")
    result = _train(cohort, tmp_path / "out", pretrained_checkpoint=tmp_path / "simclr.pt", finetune_mode="multitask")
    assert result.returncode != 0
    assert f"{tmp_path / 'simclr.pt'}: finetune_mode 'multitask' needs a checkpoint with a pixel-wise pretext head" in result.stderr


@pytest.mark.slow
def test_mismatched_pretrained_checkpoint_is_a_clear_error(cohort, tmp_path):
    state = _pretrained_checkpoint(tmp_path / "bad.pt")
    torch.save({k: v for k, v in state.items() if "stages.3" not in k}, tmp_path / "bad.pt")
    result = _train(cohort, tmp_path / "out", pretrained_checkpoint=tmp_path / "bad.pt", finetune_mode="all")
    assert result.returncode != 0
    assert f"{tmp_path / 'bad.pt'}: does not fit the network" in result.stderr
    assert "missing keys: encoder.stages.3" in result.stderr
    assert not (tmp_path / "out" / "model.pt").exists()


@pytest.mark.slow
def test_unknown_label_values_are_refused_naming_the_file(cohort, tmp_path):
    import nibabel as nib
    import numpy as np

    splits = json.loads(cohort.read_text())
    record = dict(splits["training"][0])
    label = nib.load(record["label"])
    bad = tmp_path / "acdc_style_gt.nii.gz"
    values = np.asarray(label.dataobj).astype(np.uint8)
    nib.save(nib.Nifti1Image(values + 4 * (values > 0).astype(np.uint8), label.affine), str(bad))
    record["label"] = str(bad)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [record], "validation": splits["validation"]}))
    result = _train(datalist, tmp_path / "out")
    assert result.returncode != 0 and f"{bad}: unknown label values" in result.stderr


def test_labels_with_the_cavities_swapped_are_refused_with_the_remap_command(cohort, tmp_path):
    """ACDC's own files number the RV 1 and the LV 3: canonical values, so only the anatomy tells."""
    import nibabel as nib

    splits = json.loads(cohort.read_text())
    record = dict(splits["training"][0])
    label = nib.load(record["label"])
    values = np.asarray(label.dataobj).astype(np.uint8)
    swapped = np.choose(values, np.array([0, 3, 2, 1], np.uint8))
    bad = tmp_path / "acdc_convention_gt.nii.gz"
    nib.save(nib.Nifti1Image(swapped, label.affine), str(bad))
    record["label"] = str(bad)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [record], "validation": splits["validation"]}))
    result = _train(datalist, tmp_path / "out")
    assert result.returncode != 0
    assert f"{bad}: label 3 sits inside the ring of label 2" in result.stderr
    assert "--label_map acdc" in result.stderr
    assert not (tmp_path / "out" / "model.pt").exists()


@pytest.mark.slow
def test_evaluation_reports_per_frame_scores_and_function_errors(cohort, trained, tmp_path):
    out, _ = trained
    config = "['configs/train.json','configs/evaluate.json']"
    args = ("--datalist", str(cohort), "--checkpoint", str(out / "model.pt"), "--output_dir", str(tmp_path / "eval"))
    result = _run(config, *args)
    assert result.returncode == 0, result.stderr[-4000:]
    test_records = json.loads(cohort.read_text())["test"]
    with open(tmp_path / "eval" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(test_records)
    assert {"dice_lv_cavity", "hd95_mm_rv_cavity", "reference_volume_ml_lv_myocardium"} <= set(rows[0])
    with open(tmp_path / "eval" / "function.csv") as handle:
        function = list(csv.DictReader(handle))
    assert [r["subject"] for r in function] == sorted({r["subject"] for r in test_records})
    assert float(function[0]["reference_lv_edv_ml"]) > float(function[0]["reference_lv_esv_ml"]) > 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["frames"] == len(test_records)
    assert set(summary["segmentation"]) == {"lv_cavity", "lv_myocardium", "rv_cavity"}
    # the quality counts: what postprocessing deleted, lost cavities, flagged frames and implausible functions
    quality = summary["quality"]
    assert set(quality) == {"frames_with_a_structure_lost_to_postprocessing", "frames_with_lv_cavity_dice_below_0.05",
                            "frames_with_quality_flags", "frames_without_lv_cavity", "subjects_with_implausible_function",
                            "subjects", "subjects_marked_review", "frames_in_review_subjects",
                            "frames_with_lv_cavity_dice_below_0.5", "frames_with_lv_cavity_dice_above_0.8", "study_cleanup"}
    assert quality["frames_with_quality_flags"] == sum(bool(r["quality_flags"]) for r in rows)
    assert {"lost_to_postprocessing", "quality_flags", "verdict"} <= set(rows[0])
    assert {"predicted_quality_flags", "verdict", "review_reasons"} <= set(function[0])
    # one verdict per subject; a subject with any flag is in review, with its reasons; every score again over ok
    review = {r["subject"] for r in function if r["verdict"] == "review"}
    assert all(bool(r["review_reasons"]) == (r["verdict"] == "review") for r in function)
    assert {r["subject"] for r in rows if r["quality_flags"]} <= review == {r["subject"] for r in rows
                                                                             if r["verdict"] == "review"}
    assert quality["subjects_marked_review"] == len(review)
    low = [r for r in rows if float(r["dice_lv_cavity"]) < 0.5]
    assert quality["frames_with_lv_cavity_dice_below_0.5"] == {
        "frames": len(low), "flagged": sum(bool(r["quality_flags"]) for r in low),
        "in_review_subjects": sum(r["verdict"] == "review" for r in low)}
    # the default heart clean-up takes each subject's frames together, and says what it changed per frame
    assert quality["study_cleanup"]["frames_compared"] == len(rows)
    assert quality["study_cleanup"]["frames_changed"] == sum(r["changed_by_study_cleanup"] == "True" for r in rows)
    ok_studies = summary["ok_studies"]
    assert ok_studies["frames"] == len(rows) - quality["frames_in_review_subjects"]
    assert ok_studies["subjects"] == len(function) - len(review) and "segmentation" in ok_studies
    # the error decomposition accounts for each frame's myocardial volume error, and is summarised per phase
    for row in rows:
        added = sum(float(row[f"ml_{ref}_as_lv_myocardium"]) for ref in ("background", "lv_cavity", "rv_cavity"))
        removed = sum(float(row[f"ml_lv_myocardium_as_{pred}"]) for pred in ("background", "lv_cavity", "rv_cavity"))
        error = float(row["volume_ml_lv_myocardium"]) - float(row["reference_volume_ml_lv_myocardium"])
        assert added - removed == pytest.approx(error, abs=1e-6)
    decomposition = summary["error_decomposition_ml_per_frame"]
    assert {"all", "ED", "ES"} <= set(decomposition)
    assert decomposition["all"]["ml_background_as_lv_myocardium"] == pytest.approx(
        np.mean([float(r["ml_background_as_lv_myocardium"]) for r in rows]))
    again = _run(config, *args)
    assert again.returncode != 0 and "already holds results" in again.stderr


def test_train_workflow_properties_and_monai_label_ids(cohort, tmp_path):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.json"), workflow_type="train", bundle_root=str(BUNDLE),
        datalist=str(cohort), output_dir=str(tmp_path), **{"network_def#channels": json.loads(CHANNELS)},
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    for key in ("train#dataset#data", "validate#dataset#data", "train#trainer#max_epochs", "train#handlers", "network",
                "network_def", "bundle_root", "device", "dataset_dir"):
        assert key in workflow.parser, key
    # the train and inference configs build the same network, so a trained model.pt loads for inference
    from monai.bundle import ConfigParser

    inference, train = ConfigParser(), ConfigParser()
    inference.read_config(str(BUNDLE / "configs" / "inference.json"))
    train.read_config(str(BUNDLE / "configs" / "train.json"))
    assert inference["network_def"] == train["network_def"]


# What MONAI Label 0.8.5's BundleTrainTask (monailabel/tasks/train/bundle.py) does on one GPU or the CPU:
# monai.bundle.run(run_id="run", init_id=None, final_id=None, meta_file, config_file=train.json, **overrides)
# with these override ids, its datastore's {"image", "label"} records, and a CheckpointLoader of
# models/model.pt put first in train#handlers. No datalist file exists.
_MONAI_LABEL_TRAINER = """
import json, sys
import monai.bundle
from monai.bundle import ConfigParser
bundle, records, extra = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
config = ConfigParser()
config.read_config(bundle + "/configs/train.json")
handlers = config.get("train#handlers", [])
handlers.insert(0, {"_target_": "CheckpointLoader", "load_path": bundle + "/models/model.pt",
                    "load_dict": {"model": "$@network"}, "strict": False})
monai.bundle.run(run_id="run", init_id=None, final_id=None, meta_file=bundle + "/configs/metadata.json",
                 config_file=bundle + "/configs/train.json", bundle_root=bundle, device="cpu",
                 **{"train#trainer#max_epochs": 1, "train#dataset#data": records[:-1],
                    "validate#dataset#data": records[-1:], "train#handlers": handlers}, **extra)
"""


@pytest.mark.slow
def test_monai_label_bundle_trainer_replaces_models_model_pt_without_a_datalist(cohort, tmp_path):
    import shutil

    bundle = tmp_path / "cmr_unet_segmentation"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    (bundle / "models").mkdir()
    torch.save(_tiny_network().state_dict(), bundle / "models" / "model.pt")
    before = (bundle / "models" / "model.pt").read_bytes()
    records = [{"image": r["image"], "label": r["label"]}
               for split in ("training", "validation") for r in json.loads(cohort.read_text())[split]][:5]
    extra = {k: json.loads(v) for k, v in TINY.items() if k != "max_epochs"}
    result = subprocess.run(
        [sys.executable, "-c", _MONAI_LABEL_TRAINER, str(bundle), json.dumps(records), json.dumps(extra)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "val_mean_dice" in result.stdout + result.stderr  # the handed-in validation records were used
    after = (bundle / "models" / "model.pt").read_bytes()
    assert after != before and set(torch.load(bundle / "models" / "model.pt", weights_only=True)) == set(
        _tiny_network().state_dict())
    assert sorted(p.name for p in (bundle / "models").iterdir()) == ["model.pt"]


@pytest.mark.slow
def test_verify_net_in_out_and_torchscript_export(trained, tmp_path):
    out, _ = trained
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    common = ["--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json",
              "--network_def#channels", CHANNELS]
    verify = subprocess.run([sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", *common],
                            cwd=str(BUNDLE), capture_output=True, text=True, timeout=300, env=env)
    assert verify.returncode == 0 and "verified with no error" in verify.stdout + verify.stderr, verify.stderr[-3000:]
    exported = tmp_path / "model.ts"
    export = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(exported),
         "--ckpt_file", str(out / "model.pt"), *common],
        cwd=str(BUNDLE), capture_output=True, text=True, timeout=300, env=env,
    )
    assert export.returncode == 0, export.stderr[-3000:]
    scripted = torch.jit.load(str(exported))
    network = _tiny_network()
    network.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    x = torch.randn(1, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), network.eval()(x))


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes(cohort, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541"]
    result = _run("['configs/train.json','configs/multi_gpu_train.json']", "--datalist", str(cohort),
                  "--output_dir", str(tmp_path), launcher=launcher, max_epochs=2)
    assert result.returncode == 0, result.stderr[-4000:]
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)
    assert set(state) == set(_tiny_network().state_dict())


def _orientation_of_augmented_labels(flip_prob: str, draws: int = 60) -> list:
    """Signed area of the triangle LV cavity -> myocardium -> RV centroids after each draw of the training
    augmentation: rotation and scaling keep its sign, a mirror flips it."""
    import numpy as np
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["flip_prob"] = json.loads(flip_prob)
    augment = Compose(parser.get_parsed_content("train#random_transforms"))
    label = np.zeros((1, 96, 96), np.float32)  # one patch (the default patch_size), so the crop keeps all three
    label[0, 40:56, 40:56] = 1  # LV cavity at the centre
    label[0, 40:56, 62:72] = 2  # to its right
    label[0, 24:36, 44:52] = 3  # above it
    signs = []
    for seed in range(draws):
        augment.set_random_state(seed=seed)
        out = augment({"image": label.copy(), "label": label.copy()})["label"]
        out = np.asarray(out)[0]
        (y1, x1), (y2, x2), (y3, x3) = (np.argwhere(np.round(out) == c).mean(0) for c in (1, 2, 3))
        signs.append(np.sign((x2 - x1) * (y3 - y1) - (x3 - x1) * (y2 - y1)))
    return signs


def test_training_augmentation_never_mirrors_the_heart():
    """With 5 labelled subjects the side of the RV is what tells it from the LV cavity at end-systole: the
    default augmentation rotates and scales but never mirrors; `flip_prob` brings mirroring back."""
    assert set(_orientation_of_augmented_labels("0.0")) == {-1.0}
    assert set(_orientation_of_augmented_labels("0.5")) == {-1.0, 1.0}
