"""Bad-input audit, tools: nothing of the user's is lost to ``--overwrite`` or an output folder pointed at
the input, outputs never go stale, named errors instead of tracebacks (issue 10; docs/reliability.md)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "cmr_unet_segmentation"


def _run(tool: str, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "tools" / f"{tool}.py"), *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def _fingerprint(folder: Path) -> dict:
    """Every file under ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def study(phantom_cohort, tmp_path) -> Path:
    """A private copy of one phantom subject (NIfTI and DICOM), which the tests try to damage."""
    copy = tmp_path / "study"
    shutil.copytree(phantom_cohort / "phantom_000", copy)
    return copy


@pytest.mark.parametrize("where", ["study", "parent"])
def test_function_refuses_an_output_folder_that_is_or_holds_the_study(study, where):
    before = _fingerprint(study.parent)
    out = study if where == "study" else study.parent
    done = _run("function", study, "--out", out, "--overwrite")
    assert done.returncode == 2
    assert ("the output is the input" if where == "study" else "contains the input") in done.stderr
    assert "Traceback" not in done.stderr
    assert _fingerprint(study.parent) == before  # before: the study's images, DICOM and analytic.json were deleted


def test_function_overwrite_replaces_only_its_own_files(study, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "my_notes.txt").write_text("the user's own file")
    (out / "function.json").write_text("{}")
    done = _run("function", study, "--out", out, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert (out / "my_notes.txt").read_text() == "the user's own file"
    assert json.loads((out / "function.json").read_text())["lv_edv_ml"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["function.csv", "function.json", "my_notes.txt",
                                                     "volume_curve.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_convert_refuses_an_output_folder_holding_the_input(study):
    before = _fingerprint(study)
    done = _run("convert", study / "dicom" / "sax", study, "--overwrite")
    assert done.returncode == 1 and "contains the input" in done.stderr
    assert _fingerprint(study) == before  # before: the input DICOM was deleted


def test_convert_overwrite_keeps_other_files_and_drops_its_own_stale_ones(study, tmp_path):
    out = tmp_path / "converted"
    first = _run("convert", study / "sax_cine.nii.gz", out, "--labels", study / "sax_cine_gt.nii.gz")
    assert first.returncode == 0, first.stderr
    assert (out / "sax_cine_gt.nii.gz").is_file()
    (out / "my_notes.txt").write_text("keep me")
    again = _run("convert", study / "dicom" / "sax", out, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert (out / "my_notes.txt").read_text() == "keep me"
    # the first run's labels belonged to another input: not left beside the new cine as if they matched it
    assert sorted(p.name for p in out.iterdir()) == ["frames", "my_notes.txt", "sax_cine.nii.gz"]
    assert not list((out / "frames").glob("*_gt.nii.gz"))


def test_convert_names_a_one_slice_cine_as_a_long_axis_view(study, tmp_path):
    done = _run("convert", study / "dicom" / "4ch", tmp_path / "auto")
    assert done.returncode == 0, done.stderr
    assert "a long-axis view: its normal is" in done.stdout and "spacing 0.00" not in done.stdout
    assert (tmp_path / "auto" / "lax_cine.nii.gz").is_file() and not (tmp_path / "auto" / "sax_cine.nii.gz").exists()
    named = _run("convert", study / "dicom" / "4ch", tmp_path / "named", "--view", "4ch")
    assert named.returncode == 0, named.stderr
    assert (tmp_path / "named" / "lax_4ch.nii.gz").is_file()
    wrong = _run("convert", study / "dicom" / "sax", tmp_path / "wrong", "--view", "2ch")
    assert wrong.returncode == 1 and "short-axis stack" in wrong.stderr and not (tmp_path / "wrong").exists()


def test_convert_keeps_a_single_oblique_short_axis_slice_as_short_axis(study, tmp_path):
    from cmrssl.io import CineStudy, read_cine, write_dicom_series

    stack = read_cine(study / "dicom" / "sax")
    middle = stack.num_slices // 2
    one = CineStudy(pixels=stack.pixels[:, middle:middle + 1], slice_affines=stack.slice_affines[middle:middle + 1],
                    slice_spacing_mm=0.0, trigger_times_ms=stack.trigger_times_ms)
    write_dicom_series(one, tmp_path / "one_slice")
    done = _run("convert", tmp_path / "one_slice", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "a single short-axis slice: its normal is" in done.stdout
    assert (tmp_path / "out" / "sax_cine.nii.gz").is_file()


def test_export_again_is_a_named_error_not_a_traceback(tmp_path):
    out = tmp_path / "exported"
    assert _run("export", BUNDLE, out).returncode == 0
    again = _run("export", BUNDLE, out)
    assert again.returncode == 1
    assert str(out) in again.stderr and "--overwrite" in again.stderr and "Traceback" not in again.stderr


def test_export_refuses_to_write_into_the_bundle_and_leaves_unfinished_runs_out(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    (bundle / "models" / "model.pt.partial").mkdir(parents=True)
    (bundle / "models" / "model.pt.partial" / "last.pt").write_bytes(b"an unfinished run")
    before = _fingerprint(bundle)
    for out in (bundle, bundle / "models" / "export"):
        done = _run("export", bundle, out, "--overwrite")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert _fingerprint(bundle) == before
    done = _run("export", bundle, tmp_path / "exported")
    assert done.returncode == 0, done.stderr
    assert "model.pt.partial (an unfinished training run) is left out" in done.stderr
    assert not (tmp_path / "exported" / "models" / "model.pt.partial").exists()


def test_lvquan_cv_refuses_overrides_that_are_not_json(tmp_path):
    done = _run("lvquan_cv", "--dataset_dir", tmp_path, "--workdir", tmp_path / "work", "--overrides", "{max_epochs: 2")
    assert done.returncode == 2
    assert "--overrides must be a JSON object" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "work").exists()


def test_export_weights_url_cannot_inject_entries_into_large_files_yml(tmp_path):
    import yaml

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    (bundle / "models").mkdir()
    weights = bundle / "models" / 'final "v2": best.bin'
    weights.write_bytes(bytes(range(256)) * 8)
    common = ["--large_file_mb", "0.001"]
    # before: a quote and a newline in the URL wrote a second entry; a lone quote left YAML that did not parse
    for url in ('https://example.org/a"\n- path: models/evil.pt\n  url: "https://evil.example/x',
                'https://example.org/a"b', "ftp://example.org/w", "example.org/w", "https://example.org/w?v=1"):
        done = _run("export", bundle, tmp_path / "refused", "--weights_url", url, *common)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("export: error: ") and "--weights_url" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "refused").exists()
    url = "https://example.org/cmr's/v1:2"
    done = _run("export", bundle, tmp_path / "exported", "--weights_url", url, *common)
    assert done.returncode == 0, done.stderr
    listed = yaml.safe_load((tmp_path / "exported" / "large_files.yml").read_text())
    assert listed == {"large_files": [{
        "path": 'models/final "v2": best.bin', "url": url + "/final%20%22v2%22%3A%20best.bin",
        "hash_val": hashlib.md5(weights.read_bytes()).hexdigest(), "hash_type": "md5"}]}
    assert not (tmp_path / "exported" / "models" / weights.name).exists()


def test_lvquan_ensemble_names_an_out_of_fold_file_it_cannot_use(tmp_path):
    import numpy as np

    def fold_file(config: str, **arrays) -> Path:
        path = tmp_path / config / "fold0" / "oof_predictions.npz"
        path.parent.mkdir(parents=True)
        np.savez(path, **arrays)
        return path

    pickled = fold_file("pickled", subject_names=np.array(["p1"]), indices=np.array([{"x": 1}], dtype=object))
    cut = fold_file("cut", subject_names=np.array(["p1"]), indices=np.zeros((4, 11)))
    cut.write_bytes(cut.read_bytes()[:100])
    other = fold_file("other", indices=np.zeros((4, 11)))
    for path, why in ((pickled, "it holds pickled Python objects, which are never loaded"),
                      (cut, "not a readable out-of-fold predictions file ("),
                      (other, "not an out-of-fold predictions file of configs/evaluate.json: no subject_names")):
        done = _run("lvquan_ensemble", path.parents[1], "--out", tmp_path / "ensemble.json")
        # before: "Object arrays cannot be loaded when allow_pickle=False" (no file), or a BadZipFile/KeyError traceback
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"lvquan_ensemble: error: {path}: ") and why in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "ensemble.json").exists()
