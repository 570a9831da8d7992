"""Records that cannot be true, and records handed in on the command line, through ``python -m monai.bundle run``
(issue 29, "Nothing silently wrong, round two"; docs/reliability.md):

- the ranking bundle refuses, naming datalist, split, record and subject, before any data is loaded: a
  volumes-only record with EDV < ESV (it trained, and scored as a reference of EF -88 %), two records
  for one frame (one was dropped and ED = ES), frames of a study without ``frame_index`` where their cycle
  order is needed (the list order was taken for it); an M&Ms-2 datalist with ``frame_index`` null trains
  (``int() ... 'NoneType'`` before) and is scored on volumes, not on frame numbers it does not have;
- records given as ``--train#dataset#data`` / ``--validate#dataset#data`` (what MONAI Label hands in) get
  the datalist's checks, and do not replace a finished ``model.pt`` without ``--overwrite true``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bundle_cli import bundle_env as _env, last_line as _last_line, run_bundle as _run

REPO_ROOT = Path(__file__).resolve().parents[2]
SEGMENTATION = REPO_ROOT / "bundles" / "cmr_unet_segmentation"
RANKING = REPO_ROOT / "bundles" / "cmr_ranking_ssl"
SEG_TINY = {"pixdim_mm": "[3.5, 3.5]", "patch_size": "[48, 48]", "network_def#channels": "[4, 8, 16, 32]",
            "num_workers": "0", "max_epochs": "1"}
RANKING_NET = {"backbone": "resnet10_small", "pixdim_mm": "[5.0, 5.0]", "roi_size": "32", "num_workers": "0"}
RANKING_TINY = {**RANKING_NET, "max_epochs": "1", "supervised_steps": "1", "ranking_steps": "1", "max_frames": "4",
                "nested_slices": "2"}


def _tool(tool: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "tools" / f"{tool}.py"), *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=_env())





def _nothing_loaded(result: subprocess.CompletedProcess) -> bool:
    log = result.stdout + result.stderr
    return "Loading dataset" not in log and "Epoch[" not in log


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Four phantom subjects of four frames (NIfTI only) and their datalist, through the tools a user runs."""
    root = tmp_path_factory.mktemp("records_cohort")
    for args in (("phantom", root / "cohort", "--subjects", 4, "--seed", 3, "--num_frames", 4, "--image_size", 48,
                  "--no_dicom"),
                 ("index", "phantom", root / "cohort", "--datalist", root / "datalist.json")):
        done = _tool(*args)
        assert done.returncode == 0, done.stderr[-3000:]
    return root / "datalist.json"


def _write(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content, indent=1))
    return path


def _volumes_only(cohort: Path, subject: str, edv: float, esv: float) -> dict:
    cine = str(cohort.parent / "cohort" / subject / "sax_cine.nii.gz")
    return {"image": cine, "cine": cine, "subject": subject, "edv_ml": edv, "esv_ml": esv}


# --------------------------------------------------------------------------- M&Ms-2 without a cine: frame_index null


def _nifti(array_tzhw: np.ndarray, path: Path, zooms=(1.3, 1.3, 9.0, 30.0)) -> None:
    """``[T, Z, H, W]`` -> 4D NIfTI ``[x, y, z, t]``; a 3D array ``[Z, H, W]`` -> 3D."""
    data = np.transpose(array_tzhw, tuple(range(array_tzhw.ndim))[::-1])
    img = nib.Nifti1Image(np.ascontiguousarray(data), np.diag(list(zooms[:3]) + [1.0]))
    img.header.set_zooms(zooms[: data.ndim])
    nib.save(img, str(path))


@pytest.fixture(scope="module")
def mnms2(tmp_path_factory) -> dict:
    """An M&Ms-2 tree of four subjects indexed by ``tools/index.py mnms``; only 001 has its ``SA_CINE``, so the
    ED/ES records of 002-004 have ``frame_index`` null; then the ranking bundle trained on it."""
    from cmrssl.data.phantom import generate_subject

    root = tmp_path_factory.mktemp("mnms2")
    for number, code in enumerate(("001", "002", "003", "004")):
        subject = generate_subject(7 + number, num_frames=4, image_size=32)
        cavity = [int((subject.sax.labels[t] == 1).sum()) for t in range(4)]
        folder = root / "mnms2" / "dataset" / code
        folder.mkdir(parents=True)
        if code == "001":
            _nifti(subject.sax.pixels, folder / f"{code}_SA_CINE.nii.gz")
        for phase, t in (("ED", int(np.argmax(cavity))), ("ES", int(np.argmin(cavity)))):
            _nifti(subject.sax.pixels[t], folder / f"{code}_SA_{phase}.nii.gz")
            _nifti(subject.sax.labels[t].astype(np.uint8), folder / f"{code}_SA_{phase}_gt.nii.gz")
    done = _tool("index", "mnms", root / "mnms2", "--out_dir", root / "out", "--train_subjects", "['001','002']",
                 "--test_subjects", "['003','004']")
    assert done.returncode == 0, done.stderr[-3000:]
    datalist = root / "out" / "datalist.json"
    records = {(r["subject"], r["phase"]): r for split in json.loads(datalist.read_text()).values() for r in split}
    assert records[("002", "ED")]["frame_index"] is None and records[("001", "ES")]["frame_index"] is not None
    trained = _run(RANKING, "configs/train.json", datalist=datalist, output_dir=root / "model", **RANKING_TINY)
    return {"datalist": datalist, "checkpoint": root / "model" / "model.pt", "train": trained, "root": root}


@pytest.mark.slow
def test_mnms2_records_with_null_frame_index_train_the_ranking_bundle_and_score_volumes_only(mnms2, tmp_path):
    trained = mnms2["train"]
    assert trained.returncode == 0, trained.stderr[-3000:]  # before: TypeError: int() ... 'NoneType'
    assert "2 labelled and 0 unlabelled studies" in trained.stdout + trained.stderr
    out = tmp_path / "eval"
    result = _run(RANKING, "['configs/train.json','configs/evaluate.json']", datalist=mnms2["datalist"],
                  checkpoint=mnms2["checkpoint"], output_dir=out, **RANKING_NET)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "function.csv") as handle:
        rows = {row["subject"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == ["003", "004"]
    for subject, row in rows.items():
        # the references are the ED and ES labels, by the records' phase
        assert float(row["reference_lv_edv_ml"]) > float(row["reference_lv_esv_ml"]) > 0
        assert not row.get("reference_ed_frame")  # no frame number is known, so none is scored
        report = json.loads((out / subject / "function.json").read_text())
        assert report["ed_frame"] is None and report["es_frame"] is None
        assert any("frame numbers unknown" in note for note in report["notes"])
    assert json.loads((out / "summary.json").read_text())["frames"] == {}


@pytest.mark.slow
def test_mnms2_records_with_null_frame_index_train_the_segmentation_bundle(mnms2, tmp_path):
    result = _run(SEGMENTATION, "configs/train.json", datalist=mnms2["datalist"], output_dir=tmp_path / "models",
                  **SEG_TINY)
    assert result.returncode == 0, result.stderr[-3000:]  # before: TypeError: default_collate ... NoneType
    assert (tmp_path / "models" / "model.pt").is_file()


# --------------------------------------------------------------------------- references that cannot be true


@pytest.mark.slow
def test_a_volumes_only_record_with_edv_below_esv_is_refused_for_training_and_as_reference(cohort, mnms2, tmp_path):
    good, swapped = _volumes_only(cohort, "phantom_000", 150.0, 60.0), _volumes_only(cohort, "phantom_001", 59.2, 103.8)
    datalist = _write(tmp_path / "volumes.json", {"training": [good, swapped], "validation": [], "test": []})
    result = _run(RANKING, "configs/train.json", datalist=datalist, output_dir=tmp_path / "model", **RANKING_TINY)
    assert result.returncode == 1 and _nothing_loaded(result)  # before: trained on it
    assert _last_line(result).startswith(
        f"error: ValueError: {datalist}: record 1 of 'training' (subject phantom_001): edv_ml 59.2 is smaller than "
        "esv_ml 103.8 (EF -75 %)")
    assert not (tmp_path / "model").exists()
    # as an evaluation reference: before, the scores held reference_ef_percent -87.9 and the summary's MAE used it
    datalist = _write(tmp_path / "test.json", {"training": [good], "validation": [],
                                               "test": [_volumes_only(cohort, "phantom_002", 82.1, 154.3)]})
    result = _run(RANKING, "['configs/train.json','configs/evaluate.json']", datalist=datalist,
                  checkpoint=mnms2["checkpoint"], output_dir=tmp_path / "eval", **RANKING_NET)
    assert result.returncode == 1
    assert f"{datalist}: record 0 of 'test' (subject phantom_002): edv_ml 82.1 is smaller than esv_ml 154.3" in \
        _last_line(result)
    assert not (tmp_path / "eval").exists()


def test_two_records_for_one_frame_are_refused(cohort, tmp_path):
    content = json.loads(cohort.read_text())
    content["training"][1]["frame_index"] = content["training"][0]["frame_index"]  # the ES record claims ED's frame
    subject, cine = content["training"][0]["subject"], content["training"][0]["cine"]
    datalist = _write(tmp_path / "datalist.json", content)
    result = _run(RANKING, "configs/train.json", datalist=datalist, output_dir=tmp_path / "model", **RANKING_TINY)
    assert result.returncode == 1 and _nothing_loaded(result)  # before: one frame kept, ED = ES, trained
    assert _last_line(result) == (
        f"error: ValueError: {datalist}: record 1 of 'training' (subject {subject}): claims frame_index 0 of {cine}, "
        "as record 0 does: two records for one frame (a wrong frame_index, or a record listed twice); "
        "fix or remove one")


def test_frames_without_frame_index_are_refused_where_their_cycle_order_is_needed(cohort, tmp_path):
    content = json.loads(cohort.read_text())
    for record in content["training"]:  # 3D frame files of one study, no cine, listed last frame first
        del record["frame_index"], record["cine"]
    content["training"].reverse()
    subject = content["training"][0]["subject"]
    datalist = _write(tmp_path / "datalist.json", content)
    result = _run(RANKING, "configs/train.json", datalist=datalist, output_dir=tmp_path / "model", **RANKING_TINY)
    assert result.returncode == 1 and _nothing_loaded(result)  # before: the list order taken for the cycle
    assert _last_line(result).startswith(
        f"error: ValueError: {datalist}: record 0 of 'training' (subject {subject}): no frame_index, and subject "
        f"{subject} has 4 frame records and no cine: their order through the cardiac cycle cannot be known")


@pytest.mark.slow
def test_a_single_frame_without_frame_index_needs_no_order_and_trains(cohort, tmp_path):
    content = json.loads(cohort.read_text())
    record = next(r for r in content["training"] if r["phase"] == "ED")
    content = {"training": [{k: v for k, v in record.items() if k not in ("frame_index", "cine")}]}
    result = _run(RANKING, "configs/train.json", datalist=_write(tmp_path / "datalist.json", content),
                  output_dir=tmp_path / "model", **RANKING_TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "model" / "model.pt").is_file()


# --------------------------------------------------------------------------- records handed in (MONAI Label)


def _handed_in(cohort: Path, split: str, keys=("image", "label", "subject", "frame_index")) -> list:
    return [{k: r[k] for k in keys} for r in json.loads(cohort.read_text())[split]]


def test_records_handed_in_on_the_command_line_get_the_datalist_checks(cohort, tmp_path):
    training, validation = _handed_in(cohort, "training"), _handed_in(cohort, "validation")

    def run(train, validate):
        return _run(SEGMENTATION, "configs/train.json", output_dir=tmp_path / "models", **SEG_TINY,
                    **{"train#dataset#data": json.dumps(train), "validate#dataset#data": json.dumps(validate)})

    # MONAI Label's records carry image and label only: one image trained and validated on is one subject in both
    images = _handed_in(cohort, "training", ("image", "label"))
    result = run(images, images[:1])
    assert result.returncode == 1 and _nothing_loaded(result)  # before: trained, the best epoch chosen on it
    assert _last_line(result) == (
        f"error: ValueError: {images[0]['image']} is in both the training records (record 0) and the validation "
        "records (record 0); the best epoch would be chosen on a trained study: splits must be by subject")
    missing = tmp_path / "gone" / "frame_00.nii.gz"
    result = run([training[0], dict(training[1], image=str(missing))], validation)
    assert result.returncode == 1 and _nothing_loaded(result)  # before: found by a data-loading worker
    assert _last_line(result) == (f"error: FileNotFoundError: train#dataset#data: record 1 (subject "
                                  f"{training[1]['subject']}): image {missing} does not exist")
    result = run(training + training[:1], validation)
    assert result.returncode == 1 and _nothing_loaded(result)
    assert f"train#dataset#data: record {len(training)} (subject {training[0]['subject']})" in _last_line(result)
    assert "as record 0 does: two records for one frame" in _last_line(result)
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
def test_records_handed_in_do_not_replace_a_finished_model_without_overwrite(cohort, tmp_path):
    out = tmp_path / "models"
    out.mkdir()
    (out / "model.pt").write_bytes(b"the user's finished model")
    handed_in = {"train#dataset#data": json.dumps(_handed_in(cohort, "training")),
                 "validate#dataset#data": json.dumps(_handed_in(cohort, "validation"))}
    result = _run(SEGMENTATION, "configs/train.json", output_dir=out, **SEG_TINY, **handed_in)
    assert result.returncode == 1 and _nothing_loaded(result)  # before: trained and replaced it, exit 0
    assert _last_line(result) == f"error: FileExistsError: {out / 'model.pt'} already exists; pass overwrite=True " \
                                 "to replace it"
    assert (out / "model.pt").read_bytes() == b"the user's finished model"
    result = _run(SEGMENTATION, "configs/train.json", output_dir=out, overwrite="true", **SEG_TINY, **handed_in)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model.pt").read_bytes() != b"the user's finished model"
