"""Two arms' evaluations paired over their subjects: which is closer to the reference, and how sure that is.

    python tools/compare.py --base A_S0.csv,A_S1.csv,A_S2.csv --ours B_S0.csv,B_S1.csv,B_S2.csv
        [--quantities lv_edv_ml,lv_esv_ml,lv_ef_percent] [--labels supervised,ranking]

    python tools/compare.py --base A_S0/metrics.csv,... --ours B_S0/metrics.csv,... \
        --quantities dice_lv_cavity,dice_lv_myocardium,dice_rv_cavity

Each file is an evaluation's ``function.csv`` (either bundle's ``evaluate.json``), one per seed, in the same order in
both arms. A subject is one observation: its absolute error averaged over the seeds, paired between the arms
(:func:`cmrssl.study.report.paired_function_table`, the few-label study's statistics). Prints a Markdown table: each
arm's MAE, how many subjects ``--ours`` got closer, the mean difference (ours - base; negative is better) with a 95 %
bootstrap interval over subjects, and the two-sided Wilcoxon signed-rank p (none under 6 subjects). Writes nothing.
With ``dice_`` quantities the files are the evaluations' ``metrics.csv`` (a row per frame), a subject's value is its
frames' mean Dice, and a positive difference is better.
"""

from __future__ import annotations

from pathlib import Path

import fire

from cmrssl.cli_errors import tool_errors
from cmrssl.study.report import paired_function_table


def _listed(value) -> list:
    """``"a,b"`` or ``("a", "b")`` (as fire hands them over) -> a list of strings."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def main(base, ours, quantities="lv_edv_ml,lv_esv_ml,lv_ef_percent", labels="base,ours") -> None:
    with tool_errors("compare", overwrite_option=False):
        names, arm_labels = _listed(quantities), _listed(labels)
        if len(arm_labels) != 2:
            raise ValueError(f"--labels takes two names, got {arm_labels}")
        files = {arm: [Path(p) for p in _listed(value)] for arm, value in (("base", base), ("ours", ours))}
        for path in files["base"] + files["ours"]:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such evaluation file (an evaluation's function.csv or metrics.csv)")
        print(paired_function_table(files["base"], files["ours"], names, arm_labels), end="")


if __name__ == "__main__":
    fire.Fire(main)
