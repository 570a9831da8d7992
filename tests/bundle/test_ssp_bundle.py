"""cmr_ssp_pretraining: every method (the base ``configs/train.json`` plus the method's overlay) runs through
`python -m monai.bundle run` on phantom frames, and its checkpoint loads into the segmentation U-Net with every
encoder weight present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cmrssl.bundle_configs import method_overlays

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "cmr_ssp_pretraining"
#: every method overlay the bundle has (a config with a ``method_name``): a new method is tested with no list edit
OVERLAYS = method_overlays(BUNDLE)
METHODS = tuple(OVERLAYS)


def _config_files(*overlays: str) -> str:
    """The ``--config_file`` value of a run, as the README writes it: the base config, then the overlays
    (later files override), e.g. ``['configs/train.json','configs/simclr.json']``."""
    return "[" + ",".join(f"'configs/{name}.json'" for name in ("train",) + overlays) + "]"


# Test-sized runs: 64 px slices at 5 mm (the heart stays in the field), one epoch of two iterations
# of one frame each, a narrow U-Net, small heads (DINO's crops and MIM's mask patches follow image_size).
TINY_UNET_OVERRIDES = {"network_def#channels": "[4, 8, 16, 32]"}
TINY = {
    "image_size": "64",
    "pixdim_mm": "[5.0, 5.0]",
    "max_epochs": "1",
    "epoch_length": "2",
    "frames_per_batch": "1",
    "num_workers": "0",
    **TINY_UNET_OVERRIDES,
}
#: small head sizes, each given to the methods whose overlay has the option
TINY_HEADS = {"projection_hidden_dims": "[32]", "projection_dim": "16", "num_local_crops": "2", "dino_hidden_dim": "32",
              "dino_bottleneck_dim": "16", "dino_output_dim": "64"}


def _tiny(method: str) -> dict:
    return {**TINY, **{k: v for k, v in TINY_HEADS.items() if k in OVERLAYS[method]["config"]}}


def _saves_decoder(method: str) -> bool:
    return "decoder" in OVERLAYS[method]["config"]["method"].get("saved_parts", ["encoder"])


def _tiny_unet(out_channels: int):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["network_def#out_channels"] = out_channels
    for key, value in TINY_UNET_OVERRIDES.items():
        parser[key] = json.loads(value)
    return parser.get_parsed_content("network_def", instantiate=True)


@pytest.fixture(scope="module")
def phantom_datalist(phantom_cohort, tmp_path_factory) -> Path:
    """Unlabelled records: two 3D frames of two subjects, and one frame of a 4D cine by frame_index."""
    subjects = sorted(p for p in phantom_cohort.iterdir() if p.is_dir())
    records = []
    for subject in subjects[:2]:
        frames = sorted((subject / "frames").glob("frame_[0-9][0-9].nii.gz"))
        for index in (0, len(frames) // 2):
            records.append({"image": str(frames[index]), "subject": subject.name, "frame_index": index})
    records.append({"image": str(subjects[-1] / "sax_cine.nii.gz"), "subject": subjects[-1].name, "frame_index": 3})
    path = tmp_path_factory.mktemp("ssp") / "datalist.json"
    path.write_text(json.dumps({"training": records, "validation": [], "test": []}))
    return path


def _run_bundle(method: str, datalist: Path, out: Path, *extra: str, launcher=None, config_files=None) -> subprocess.CompletedProcess:
    config = config_files or _config_files(method)
    overrides = _tiny(method)
    command = list(launcher or [sys.executable]) + ["-m", "monai.bundle", "run", "--config_file", config]
    command += ["--datalist", str(datalist), "--checkpoint", str(out / f"{method}.pt"), "--output_dir", str(out / "runs")]
    for key, value in overrides.items():
        command += [f"--{key}", value]
    command += list(extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, cwd=str(BUNDLE), capture_output=True, text=True, timeout=600, env=env)


def _assert_loads_into_segmentation_unet(checkpoint: Path, method: str) -> None:
    from cmrssl.networks.checkpoint import load_pretrained

    state = torch.load(checkpoint, weights_only=True)
    assert state and all(k.startswith(("encoder.", "decoder.", "pretext_head.")) for k in state)
    segmentation = _tiny_unet(out_channels=4)
    encoder_keys = {k for k in segmentation.state_dict() if k.startswith("encoder.")}
    assert encoder_keys <= set(state), f"{method}: missing encoder keys {sorted(encoder_keys - set(state))[:5]}"
    if _saves_decoder(method):
        assert any(k.startswith("decoder.") for k in state)
        assert state["pretext_head.conv.conv.weight"].shape[0] == 1, "the reconstruction head, kept for multi-task"
    else:
        assert not any(k.startswith(("decoder.", "pretext_head.")) for k in state)
    load_pretrained(segmentation, checkpoint)
    loaded = segmentation.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in encoder_keys)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_two_iterations_of_every_method_and_checkpoint_loads(method, phantom_datalist, tmp_path):
    # tracking, when asked: TensorBoard on DINO, MLflow (MONAI's --tracking) on MIM
    extra = {"dino": ("--use_tensorboard", "True"), "mim": ("--tracking", "mlflow")}.get(method, ())
    result = _run_bundle(method, phantom_datalist, tmp_path, *extra)
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stdout + result.stderr
    assert "Iter: 2/2" in log and "train_loss" in log
    checkpoint = tmp_path / f"{method}.pt"
    assert checkpoint.is_file()
    _assert_loads_into_segmentation_unet(checkpoint, method)
    if method == "dino":
        assert list((tmp_path / "runs").glob("events.out.tfevents*")), "TensorBoard asked for but not written"
    if method == "mim":
        assert (tmp_path / "runs" / "mlruns.db").is_file(), "MLflow asked for but not written"


@pytest.mark.slow
def test_existing_checkpoint_is_not_overwritten(phantom_datalist, tmp_path):
    checkpoint = tmp_path / "simclr.pt"
    checkpoint.write_bytes(b"keep me")
    result = _run_bundle("simclr", phantom_datalist, tmp_path)
    assert result.returncode != 0 and "already exists" in result.stderr
    assert checkpoint.read_bytes() == b"keep me"


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes(phantom_datalist, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531"]
    result = _run_bundle(
        "pcl", phantom_datalist, tmp_path, launcher=launcher,
        config_files=_config_files("pcl", "multi_gpu_train"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    _assert_loads_into_segmentation_unet(tmp_path / "pcl.pt", "pcl")


def test_method_overlays_leave_the_shared_sections_to_the_base():
    """Each method file is a short overlay on ``configs/train.json`` (merged after it, later keys win): it sets
    its method's pieces and defaults only, so the data pipeline, trainer, checkpointing and options have one
    definition, which every method runs with."""
    from monai.bundle import ConfigParser

    base = json.loads((BUNDLE / "configs" / "train.json").read_text())
    overlays = {m: OVERLAYS[m]["config"] for m in METHODS}
    shared_keys = ["imports", "bundle_root", "device", "seed", "dataset_dir", "datalist", "datalist_splits", "checkpoint",
                   "overwrite", "output_dir", "use_tensorboard", "pixdim_mm", "image_size", "frames_per_batch",
                   "ssl_model", "initialize", "run", "intensity_percentiles"]
    assert set(shared_keys) <= set(base)
    # base ids a method may change: its number of network outputs, its optimiser settings, extra handlers
    may_override = {"num_classes", "optimizer#momentum", "optimizer#nesterov", "optimizer#weight_decay",
                    "+train#handlers"}
    for method, overlay in overlays.items():
        # the ids the base refers to but leaves to the method
        assert {"method_name", "learning_rate", "views", "loss", "method"} <= set(overlay), method
        overridden = {key for key in overlay if key.lstrip("+").split("#")[0] in base}
        assert overridden <= may_override, f"{method}.json overrides base ids {sorted(overridden - may_override)}"
    configs = {m: ConfigParser.load_config_files([str(BUNDLE / "configs" / f) for f in ("train.json", f"{m}.json")])
               for m in METHODS}
    for key in shared_keys:
        values = {m: json.dumps(c[key], sort_keys=True) for m, c in configs.items()}
        assert len(set(values.values())) == 1, f"{key} differs between methods: {values}"
    for section in ("records", "preprocessing", "dataset", "dataloader", "trainer"):
        values = {m: json.dumps(c["train"][section], sort_keys=True) for m, c in configs.items()}
        assert len(set(values.values())) == 1, f"train#{section} differs: {values}"
    # DINO's teacher EMA, loss epoch and last-layer freezing come after the base's handlers, which stay whole
    handlers = {m: [h["_target_"] for h in c["train"]["handlers"]] for m, c in configs.items()}
    assert handlers["dino"][: len(base["train"]["handlers"])] == handlers["simclr"]
    assert handlers["dino"][len(base["train"]["handlers"]):] == [
        "cmrssl.engines.ssl.TeacherEMAHandler", "cmrssl.engines.ssl.EpochSetter",
        "cmrssl.engines.ssl.FreezeParametersHandler"]
    # the encoder is pretrained on intensities normalised as the segmentation bundle fine-tunes and infers on them
    segmentation = json.loads((REPO_ROOT / "bundles" / "cmr_unet_segmentation" / "configs" / "train.json").read_text())
    for key in ("pixdim_mm", "intensity_percentiles"):
        assert base[key] == segmentation[key], key
    targets = [t.get("_target_") for t in base["train"]["preprocessing"]["transforms"] if isinstance(t, dict)]
    assert targets.index("ClipIntensityPercentilesd") + 1 == targets.index("NormalizeIntensityd")
    for method, config in configs.items():
        assert config["method_name"] == method


@pytest.mark.slow
def test_densenet_pretrained_with_simclr_initialises_the_lvquan_backbone(phantom_datalist, phantom_cohort, tmp_path):
    """The documented path to the LV-index bundle: SimCLR on a MONAI DenseNet (``--network_def``), then
    ``cmr_lvquan_ensemble --pretrained_weights``; with learning rate 0 the trained network keeps the
    pretrained convolution weights exactly."""
    densenet = {"_target_": "monai.networks.nets.DenseNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                "init_features": 16, "growth_rate": 8, "block_config": [2, 2, 2, 2]}
    checkpoint = tmp_path / "simclr_densenet.pt"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _config_files("simclr"),
               "--datalist", str(phantom_datalist), "--checkpoint", str(checkpoint), "--output_dir", str(tmp_path / "ssl"),
               "--network_def", json.dumps(densenet)]
    for key, value in _tiny("simclr").items():
        if key not in TINY_UNET_OVERRIDES:
            command += [f"--{key}", value]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, cwd=str(BUNDLE), capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    pretrained = torch.load(checkpoint, weights_only=True)
    assert "features.conv0.weight" in pretrained and not any(k.startswith("class_layers.out") for k in pretrained)

    lvquan = REPO_ROOT / "bundles" / "cmr_lvquan_ensemble"
    out = tmp_path / "lvquan"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
               "--dataset_dir", str(phantom_cohort), "--output_dir", str(out), "--pretrained_weights", str(checkpoint),
               "--learning_rate", "0", "--max_epochs", "1", "--epoch_length", "1", "--batch_size", "2",
               "--crop_size", "72", "--patch_size", "64", "--pixdim_mm", "[2.0, 2.0]", "--num_folds", "3"]
    for key in ("_target_", "init_features", "growth_rate", "block_config"):
        command += [f"--backbone_2d#{key}", json.dumps(densenet[key]) if key != "_target_" else densenet[key]]
    result = subprocess.run(command, cwd=str(lvquan), capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    trained = torch.load(out / "model.pt", weights_only=True)
    convs = [k for k in pretrained if k.endswith("weight") and "conv" in k]
    assert len(convs) > 10
    for key in convs:
        assert torch.equal(trained[f"backbone.{key}"], pretrained[key]), key
