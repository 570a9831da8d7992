"""Report figures a reader can check: volume curve, contour overlays, Bland-Altman.

matplotlib is an optional dependency (the ``plots`` extra): it is imported
inside each function, and figures are drawn with the object-oriented API on an
Agg canvas so that no global backend is switched and no display is needed.
Every figure is written to a temporary file beside ``path`` and renamed, so a
failed plot leaves nothing behind; an existing ``path`` is replaced only with
``overwrite=True``.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from cmrssl.io.atomic import atomic_file
from cmrssl.labels import LV_CAVITY, RV_CAVITY, STRUCTURE_COLOURS

__all__ = ["plot_volume_curve", "plot_contour_overlays", "plot_bland_altman", "plot_position_boxes"]


def _new_figure(width_in: float, height_in: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("plots need matplotlib: pip install 'cmrssl[plots]'") from exc
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, overwrite: bool) -> Path:
    path = Path(path)
    with atomic_file(path, overwrite=overwrite) as tmp:
        # The temporary name ends with the target's name, so the format follows its suffix.
        fig.savefig(tmp, format=(path.suffix.lstrip(".") or "png"), bbox_inches="tight")
    return path


def plot_volume_curve(function, path, title: Optional[str] = None, overwrite: bool = False,
                      flags: Sequence[str] = ()) -> Path:
    """Plot LV (and RV) cavity volume over the cycle with ED and ES marked.

    Args:
        function: :class:`cmrssl.metrics.function.CardiacFunction`.
        path: output image (``.png``).
        title: figure title; defaults to the study's ``source``.
        overwrite: replace an existing ``path``.
        flags: quality flags (:mod:`cmrssl.metrics.quality`), written in red under the plot.

    Returns:
        ``path``. Raises FileExistsError when ``path`` exists and not ``overwrite``.
    """
    lv = np.asarray(function.lv_volume_curve_ml, dtype=np.float64)
    rv = np.asarray(function.rv_volume_curve_ml, dtype=np.float64)
    frames = np.asarray(
        function.frame_indices if function.frame_indices is not None else np.arange(len(lv)), dtype=np.int64
    )
    fig = _new_figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    # Unlabelled frames are NaN: the line breaks there, so only consecutive
    # measurements are joined and an ED/ES-only study shows two points.
    ax.plot(frames, lv, "-o", color=STRUCTURE_COLOURS[LV_CAVITY][1], ms=4, label=STRUCTURE_COLOURS[LV_CAVITY][0])
    if function.rv_edv_ml is not None:
        ax.plot(frames, rv, "-s", color=STRUCTURE_COLOURS[RV_CAVITY][1], ms=4, label=STRUCTURE_COLOURS[RV_CAVITY][0])
    for name, frame, volume, colour, offset in (
        ("ED", function.ed_frame, function.lv_edv_ml, "black", (6, -22)),
        ("ES", function.es_frame, function.lv_esv_ml, "dimgray", (6, 8)),
    ):
        ax.axvline(frame, color=colour, ls="--", lw=1)
        ax.plot([frame], [volume], "D", color=colour, ms=7)
        ax.annotate(
            f"{name} (frame {frame})\n{volume:.1f} ml",
            (frame, volume), textcoords="offset points", xytext=offset, fontsize=8,
        )
    ax.set_xlim(float(frames.min()) - 0.5, float(frames.max()) + 0.5)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.12)
    ax.set_xlabel("frame (0-based)")
    ax.set_ylabel("volume (ml)")
    ef = function.lv_ef_percent
    ax.set_title(
        (title or function.source or "cardiac function")
        + f"\nLV EDV {function.lv_edv_ml:.1f} ml, ESV {function.lv_esv_ml:.1f} ml, EF {ef:.1f} %",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if flags:
        text = "check: " + "; ".join(flags)
        fig.text(0.01, 0.005, textwrap.fill(text, 120), color="#b30000", fontsize=7, va="bottom", ha="left")
        fig.subplots_adjust(bottom=0.12 + 0.035 * len(textwrap.wrap(text, 120)))
    return _save(fig, path, overwrite)


def plot_contour_overlays(
    image,
    labels,
    path,
    title: str = "",
    slices: Optional[Sequence[int]] = None,
    max_columns: int = 4,
    crop_margin: Optional[int] = 16,
    overwrite: bool = False,
) -> Path:
    """Draw the contours of LV cavity, LV myocardium and RV cavity on a grid of slices.

    Args:
        image: ``[Z, H, W]`` intensities of one frame.
        labels: ``[Z, H, W]`` canonical labels of that frame (prediction or reference).
        path: output image (``.png``).
        title: figure title (study, frame).
        slices: slice indices to show; default every slice holding a label, or all when none do.
        max_columns: grid width.
        crop_margin: zoom on the labelled region (union over the shown slices) plus this
            many pixels; None shows the whole field of view.
        overwrite: replace an existing ``path``.

    Returns:
        ``path``.

    Raises:
        ValueError: image and labels not 3D or of different shapes.
        FileExistsError: ``path`` exists and not ``overwrite``.
    """
    image, labels = np.asarray(image, dtype=np.float32), np.asarray(labels)
    if image.ndim != 3 or labels.shape != image.shape:
        raise ValueError(
            f"image and labels must both be [Z, H, W] of one shape, got {image.shape} and {labels.shape}"
        )
    if slices is None:
        has_label = (labels > 0).reshape(labels.shape[0], -1).any(axis=1)
        slices = np.flatnonzero(has_label).tolist() or list(range(image.shape[0]))
    slices = [int(z) for z in slices]
    columns = max(1, min(int(max_columns), len(slices)))
    rows = int(math.ceil(len(slices) / columns))
    fig = _new_figure(2.6 * columns, 2.6 * rows + 0.4)
    # One intensity window for the whole stack, robust to a few bright pixels.
    rows_range, cols_range = slice(None), slice(None)
    labelled = labels[slices] > 0
    if crop_margin is not None and labelled.any():
        r = np.flatnonzero(labelled.any(axis=(0, 2)))
        c = np.flatnonzero(labelled.any(axis=(0, 1)))
        rows_range = slice(max(0, r[0] - crop_margin), r[-1] + crop_margin + 1)
        cols_range = slice(max(0, c[0] - crop_margin), c[-1] + crop_margin + 1)
    finite = image[np.isfinite(image)]
    vmin, vmax = (np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0))
    for k, z in enumerate(slices):
        ax = fig.add_subplot(rows, columns, k + 1)
        ax.imshow(image[z][rows_range, cols_range], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        # Cavities last: their edge is shared with the myocardium's inner edge.
        for label in (2, 3, 1):
            name, colour = STRUCTURE_COLOURS[label]
            mask = labels[z][rows_range, cols_range] == label
            if mask.any() and not mask.all():
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.0)
        ax.set_title(f"slice {z}", fontsize=8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    from matplotlib.lines import Line2D

    handles = [Line2D([0], [0], color=c, lw=1.5, label=n) for n, c in STRUCTURE_COLOURS.values()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    return _save(fig, path, overwrite)


def plot_position_boxes(panels: Sequence[dict], path, title: str = "", overwrite: bool = False) -> Path:
    """Images side by side with view lines drawn and numbered boxes outlined (anatomical-position labels).

    Args:
        panels: one dict per image: ``image`` ``[H, W]``, ``lines`` (list of
            ``[[col0, row0], [col1, row1]]`` endpoints, or None for a line outside the
            image), ``corners`` ``[N, 4, 2]`` box corners ``(col, row)``, ``centres``
            ``[N, 2]`` (box ``i`` is numbered ``i + 1``), ``title``.
        path: output image (``.png``).
        title: figure title.
        overwrite: replace an existing ``path``.

    Returns:
        ``path``. Raises FileExistsError when ``path`` exists and not ``overwrite``.
    """
    fig = _new_figure(4.2 * max(1, len(panels)), 4.6)
    line_colours = ("#ff7f00", "#ffff33")  # ColorBrewer Set1 orange and yellow: visible on grey
    for k, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        image = np.asarray(panel["image"], dtype=np.float32)
        finite = image[np.isfinite(image)]
        vmin, vmax = (np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0))
        ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        for line, colour in zip(panel.get("lines") or [], line_colours):
            if line is not None:
                line = np.asarray(line, dtype=np.float64)
                ax.plot(line[:, 0], line[:, 1], "-", color=colour, lw=1.0)
        height, width = image.shape
        for number, (corners, centre) in enumerate(zip(panel["corners"], panel["centres"]), start=1):
            closed = np.vstack([corners, corners[:1]])
            ax.plot(closed[:, 0], closed[:, 1], "-", color="#e41a1c", lw=1.0)
            if -0.5 <= centre[0] <= width - 0.5 and -0.5 <= centre[1] <= height - 0.5:
                ax.text(centre[0], centre[1], str(number), color="white", fontsize=7, ha="center", va="center",
                        fontweight="bold")
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        ax.set_title(str(panel.get("title", "")), fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, overwrite)


def plot_bland_altman(
    reference, predicted, path, label: str = "", unit: str = "ml", overwrite: bool = False
) -> dict:
    """Bland-Altman plot of ``predicted`` against ``reference`` (difference vs mean).

    Args:
        reference, predicted: ``[N]`` paired measurements (e.g. EDV per subject).
        path: output image (``.png``).
        label: quantity name for titles (e.g. ``"LV EDV"``).
        unit: unit of the measurements.
        overwrite: replace an existing ``path``.

    Returns:
        ``{"n", "bias", "sd", "loa_low", "loa_high"}``: mean difference
        (predicted - reference), its standard deviation and the 95 % limits of
        agreement ``bias +- 1.96 sd``.

    Raises:
        ValueError: arrays of different length, fewer than two pairs, or NaN.
    """
    reference = np.asarray(reference, dtype=np.float64).ravel()
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    if reference.shape != predicted.shape:
        raise ValueError(f"{label or 'Bland-Altman'}: {reference.size} references for {predicted.size} predictions")
    if reference.size < 2:
        raise ValueError(f"{label or 'Bland-Altman'}: need at least two pairs, got {reference.size}")
    if not (np.isfinite(reference).all() and np.isfinite(predicted).all()):
        raise ValueError(f"{label or 'Bland-Altman'}: measurements contain NaN or infinity")
    mean = (reference + predicted) / 2.0
    diff = predicted - reference
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1))
    stats = {"n": int(diff.size), "bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}
    fig = _new_figure(5.6, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(mean, diff, s=14, color="#377eb8")
    ax.axhline(bias, color="black", lw=1, label=f"bias {bias:+.2f} {unit}")
    for value, name in ((stats["loa_low"], "-1.96 SD"), (stats["loa_high"], "+1.96 SD")):
        ax.axhline(value, color="gray", ls="--", lw=1)
        ax.annotate(f"{name}: {value:+.2f}", (1.0, value), xycoords=("axes fraction", "data"),
                    xytext=(-4, 3), textcoords="offset points", ha="right", fontsize=7)
    ax.axhline(0.0, color="lightgray", lw=0.8)
    ax.set_xlabel(f"mean of reference and prediction ({unit})")
    ax.set_ylabel(f"prediction - reference ({unit})")
    ax.set_title(f"Bland-Altman {label} (n={stats['n']})".strip(), fontsize=9)
    ax.legend(fontsize=8, loc="best")
    ax.grid(True, alpha=0.3)
    _save(fig, path, overwrite)
    return stats
