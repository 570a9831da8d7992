"""Real ACDC training set: ED/ES found from the label volumes equal the expert
``Info.cfg`` frames for all 100 patients, and group-level EF separates the
pathologies as published (Bernard et al. 2018, Table I).

Measured (``cardiac_function_from_study`` on ``read_nifti_frames``): mean LV EF
DCM 18.4 %, MINF 31.0 %, RV 54.7 %, NOR 60.3 %, HCM 67.4 %. No quality flag
(``cmrssl.metrics.quality``, with the spacing and the function) fires on any expert pair.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from cmrssl.io import read_nifti_frames
from cmrssl.metrics.function import cardiac_function_from_study
from cmrssl.metrics.quality import study_quality_flags

pytestmark = pytest.mark.realdata


def _info(folder) -> dict:
    lines = (folder / "Info.cfg").read_text().splitlines()
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}


def test_acdc_ed_es_from_volumes_match_info_cfg(acdc_root):
    patients = sorted(p for p in acdc_root.glob("patient*") if (p / "Info.cfg").is_file())
    assert len(patients) == 100
    ef_by_group = defaultdict(list)
    for folder in patients:
        info = _info(folder)
        study = read_nifti_frames(folder)
        fn = cardiac_function_from_study(study)
        frames = list(study.labelled_frames)
        flags = study_quality_flags(study.labels[frames], fn.scalars(), frames=frames,
                                    spacing_zyx_mm=study.spacing_zyx_mm)
        assert flags == [], (folder.name, flags)
        # Info.cfg frames are 1-based.
        assert (fn.ed_frame, fn.es_frame) == (int(info["ED"]) - 1, int(info["ES"]) - 1), folder.name
        assert fn.rv_edv_ml is not None and fn.lv_mass_g is not None, folder.name
        ef_by_group[info["Group"]].append(fn.lv_ef_percent)
    mean_ef = {group: float(np.mean(v)) for group, v in ef_by_group.items()}
    assert sorted(mean_ef) == ["DCM", "HCM", "MINF", "NOR", "RV"]
    assert mean_ef["DCM"] < 25 and mean_ef["MINF"] < 40
    assert 50 < mean_ef["NOR"] < 70 and mean_ef["HCM"] > 60
