"""Index a data set into a MONAI datalist (``{"training": [...], "validation": [...], "test": [...]}``).

    python tools/index.py phantom COHORT --datalist OUT.json [--seed 0]
        [--train_subjects 2-7 --validation_subjects 9 --test_subjects 0,1,8]
    python tools/index.py acdc ROOT --out_dir DIR [--datalist DIR/datalist.json] [--seed 0]
        [--train_subjects 1-80 --test_subjects 81-100 [--validation_subjects ...]]
    python tools/index.py sunnybrook ROOT --out_dir DIR
    python tools/index.py mnms ROOT --out_dir DIR [--seeded_split]
    python tools/index.py kaggle ROOT --out_dir DIR     (or --datalist OUT.json)
    python tools/index.py dicom ROOT --out_dir DIR      (or --datalist OUT.json)

Every command also takes ``--seed``, ``--fractions 0.7,0.1,0.2`` (training,
validation, test shares of the subjects) and ``--overwrite``. The datalist
defaults to ``<out_dir>/datalist.json``; converted subject folders go one level
down (``<out_dir>/labels/`` for ACDC, ``<out_dir>/frames/`` for Sunnybrook and
M&Ms), because MONAI's ``load_decathlon_datalist`` would turn a subject key
that names a folder beside the datalist into that folder's path (for the same
reason the phantom's datalist must not go into the cohort folder). An existing
datalist or converted subject folder is refused unless ``--overwrite``: exit
code 2 with a one-line message, as for bad input.
Prints one line per split (subjects, records) and where the datalist went, plus
a count of the subjects skipped for unreadable files (M&Ms, Kaggle, DICOM; the
warnings name each file and reason) and, for Sunnybrook, the slices whose
myocardium was dropped (i-contour not inside the o-contour). One DICOM series
under two subjects (a copied study) is refused (exit code 2), naming both.
The layouts and record fields are documented in ``cmrssl.data.<indexer>``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import fire

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "common"))

from cmrssl.cli_errors import tool_errors  # noqa: E402
from cmrssl.data.datalist import SPLITS, format_summary, split_records, write_datalist  # noqa: E402
from cmrssl.io.atomic import check_can_write  # noqa: E402


class _Usage(ValueError):
    """A command line that cannot be run as given."""


def _fractions(value) -> Optional[Dict[str, float]]:
    """``0.7,0.1,0.2`` (fire gives a tuple), ``"0.7,0.1,0.2"`` or a dict -> ``{split: share}``."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    parts = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]
    if len(parts) != 3:
        raise _Usage(f"--fractions needs three shares training,validation,test; got {value!r}")
    try:
        return dict(zip(SPLITS, (float(p) for p in parts)))
    except ValueError as err:
        raise _Usage(f"--fractions needs numbers, got {value!r}") from err


def _names(value) -> Optional[List[str]]:
    """A subject list as fire hands it over (``"a,b"``, ``(1, 2)``, ``7``) -> strings."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _assignments(train_subjects, validation_subjects, test_subjects) -> Optional[Dict[str, list]]:
    given = {"training": train_subjects, "validation": validation_subjects, "test": test_subjects}
    if all(v is None for v in given.values()):
        return None
    return {split: _names(v) for split, v in given.items() if v is not None}


def _datalist_path(out_dir: Optional[str], datalist: Optional[str], command: str) -> Path:
    if datalist is not None:
        return Path(datalist)
    if out_dir is None:
        raise _Usage(f"{command}: give --out_dir DIR (datalist DIR/datalist.json) or --datalist OUT.json")
    return Path(out_dir) / "datalist.json"


def _report(datalist: dict, path: Path, started: float, notes: Sequence[str] = ()) -> None:
    for line in format_summary(datalist):
        print(line)
    skipped = datalist.get("skipped") or []
    if skipped:
        noun = "folder" if len(skipped) == 1 else "folders"
        print(f"skipped: {len(skipped)} {noun} (see the warnings above), e.g. {skipped[0]['folder']}")
    for line in notes:
        print(line)
    print(f"wrote {path} in {time.perf_counter() - started:.1f} s")


def _dropped_myocardium(records: Sequence[dict]) -> List[str]:
    """Sunnybrook: one line naming the slices whose myocardium was not labelled, if any."""
    dropped = [(r["subject"], r["frame_index"], r["myocardium_dropped_slices"]) for r in records
               if r.get("myocardium_dropped_slices")]
    if not dropped:
        return []
    where = "; ".join(f"{subject} frame {t} slices {slices}" for subject, t, slices in dropped)
    count = sum(len(slices) for _, _, slices in dropped)
    return [f"myocardium dropped on {count} slice(s) whose i-contour is not inside the o-contour "
            f"(LV cavity kept; records list them in myocardium_dropped_slices): {where}"]


# --------------------------------------------------------------------------- commands


def phantom(cohort: str, datalist: Optional[str] = None, seed: int = 0, fractions=None,
            train_subjects=None, validation_subjects=None, test_subjects=None, overwrite: bool = False) -> None:
    """Phantom cohort (tools/phantom.py) -> datalist (outside the cohort folder, e.g. beside it).

    --train_subjects / --validation_subjects / --test_subjects take subject numbers and
    ranges (``0,1,8``, ``2-7,10-19``) or names (``phantom_009``); subjects in no list are left out.
    """
    from cmrssl.data.phantom_index import index_phantom

    started = time.perf_counter()
    if datalist is None:
        raise _Usage("phantom: give --datalist OUT.json (outside the cohort folder)")
    path = Path(datalist)
    result = index_phantom(cohort, path, seed=seed, fractions=_fractions(fractions), overwrite=overwrite,
                           subjects=_assignments(train_subjects, validation_subjects, test_subjects))
    _report(result, path, started)


def acdc(root: str, out_dir: str = None, datalist: Optional[str] = None, seed: int = 0, fractions=None,
         train_subjects=None, validation_subjects=None, test_subjects=None, overwrite: bool = False) -> None:
    """ACDC root (patientNNN/) -> canonical label files in OUT_DIR/labels and the datalist.

    --train_subjects / --validation_subjects / --test_subjects take patient numbers and
    ranges (``1-80``, ``1-20,41-60``); patients in no list are left out.
    """
    from cmrssl.data.acdc import index_acdc

    started = time.perf_counter()
    if out_dir is None:
        raise _Usage("acdc: give --out_dir DIR for the canonical label files")
    path = _datalist_path(out_dir, datalist, "acdc")
    result = index_acdc(root, out_dir, path, seed=seed, fractions=_fractions(fractions),
                        subjects=_assignments(train_subjects, validation_subjects, test_subjects),
                        overwrite=overwrite)
    _report(result, path, started)


def sunnybrook(root: str, out_dir: str = None, datalist: Optional[str] = None, seed: int = 0, fractions=None,
               train_subjects=None, validation_subjects=None, test_subjects=None, overwrite: bool = False) -> None:
    """Sunnybrook root (dicoms/, contourfiles/, link.csv) -> labelled NIfTI frames in OUT_DIR/frames, datalist."""
    from cmrssl.data.sunnybrook import index_sunnybrook

    started = time.perf_counter()
    if out_dir is None:
        raise _Usage("sunnybrook: give --out_dir DIR for the converted frames")
    path = _datalist_path(out_dir, datalist, "sunnybrook")
    check_can_write(path, overwrite)  # refuse before converting anything
    assignments = _assignments(train_subjects, validation_subjects, test_subjects)
    selected = None if assignments is None else [s for names in assignments.values() for s in names]
    records = index_sunnybrook(root, Path(out_dir) / "frames", subjects=selected, overwrite=overwrite)
    result = split_records(records, seed, _fractions(fractions), assignments=assignments)
    write_datalist(result, path, overwrite=overwrite)
    _report(result, path, started, notes=_dropped_myocardium(records))


def mnms(root: str, out_dir: str = None, datalist: Optional[str] = None, seed: int = 0, fractions=None,
         train_subjects=None, validation_subjects=None, test_subjects=None, seeded_split: bool = False,
         csv: Optional[str] = None, overwrite: bool = False) -> None:
    """M&Ms / M&Ms-2 root -> ED/ES frames in OUT_DIR/frames (M&Ms) and the datalist.

    M&Ms keeps its Training/Validation/Testing folders as the splits unless --seeded_split.
    """
    from cmrssl.data.mnms import index_mnms

    started = time.perf_counter()
    if out_dir is None:
        raise _Usage("mnms: give --out_dir DIR for the extracted frames")
    path = _datalist_path(out_dir, datalist, "mnms")
    result = index_mnms(root, out_dir, path, seed=seed, fractions=_fractions(fractions),
                        subjects=_assignments(train_subjects, validation_subjects, test_subjects),
                        dataset_split=not seeded_split, csv_path=csv, overwrite=overwrite)
    _report(result, path, started)


def kaggle(root: str, out_dir: Optional[str] = None, datalist: Optional[str] = None, seed: int = 0, fractions=None,
           train_subjects=None, validation_subjects=None, test_subjects=None, seeded_split: bool = False,
           overwrite: bool = False) -> None:
    """Kaggle DSB 2016 root (train/validate/test/<id>/study/sax_NN) -> unlabelled datalist.

    Keeps the data set's train/validate/test as the splits unless --seeded_split.
    """
    from cmrssl.data.kaggle_dsb import index_kaggle_dsb

    started = time.perf_counter()
    path = _datalist_path(out_dir, datalist, "kaggle")
    result = index_kaggle_dsb(root, path, seed=seed, fractions=_fractions(fractions),
                              subjects=_assignments(train_subjects, validation_subjects, test_subjects),
                              dataset_split=not seeded_split, overwrite=overwrite, progress=True)
    _report(result, path, started)


def dicom(root: str, out_dir: Optional[str] = None, datalist: Optional[str] = None, seed: int = 0, fractions=None,
          train_subjects=None, validation_subjects=None, test_subjects=None, min_slices: int = 2,
          overwrite: bool = False) -> None:
    """Any folder tree of DICOM cine series -> unlabelled datalist (subject = folder relative to ROOT)."""
    from cmrssl.data.dicom_folder import index_dicom_folder

    started = time.perf_counter()
    path = _datalist_path(out_dir, datalist, "dicom")
    result = index_dicom_folder(root, path, seed=seed, fractions=_fractions(fractions),
                                subjects=_assignments(train_subjects, validation_subjects, test_subjects),
                                min_slices=min_slices, overwrite=overwrite, progress=True)
    _report(result, path, started)


COMMANDS = {"phantom": phantom, "acdc": acdc, "sunnybrook": sunnybrook, "mnms": mnms, "kaggle": kaggle,
            "dicom": dicom}


def main(argv: Optional[List[str]] = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tool_errors("index", exists_status=2):  # CineReadError is a ValueError
        fire.Fire(COMMANDS, command=argv)


if __name__ == "__main__":
    main()
