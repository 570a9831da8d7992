"""Glue of the LVQuan bundle: training batches (``image`` + a target dict for
:class:`cmrssl.losses.lvquan.LVQuanLoss`) and multi-crop / multi-window evaluation
writing out-of-fold predictions for the ensemble search."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "prepare_lvquan_batch", "TARGET_KEYS", "multi_crop_offsets", "predict_lvquan", "write_oof_predictions", "evaluate_fold",
    "study_slices", "infer_study", "PREDICTION_FILE", "recalibrate_batchnorm", "BatchNormRecalibration",
]

#: The per-frame table :func:`infer_study` writes in its output folder.
PREDICTION_FILE = "lvquan_predictions.csv"

TARGET_KEYS = ("indices", "phase", "label")


def prepare_lvquan_batch(batchdata: Dict, device: Optional[torch.device] = None, non_blocking: bool = False,
                         **kwargs) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """``(image, {"indices", "phase", "label"})`` on ``device`` (MONAI ``prepare_batch`` signature)."""
    def move(x):
        x = torch.as_tensor(x)
        return x.to(device=device, non_blocking=non_blocking) if device is not None else x

    missing = [k for k in ("image",) + TARGET_KEYS if k not in batchdata]
    if missing:
        raise KeyError(f"LVQuan batch lacks {missing}; keys: {sorted(batchdata)}")
    return move(batchdata["image"]), {k: move(batchdata[k]) for k in TARGET_KEYS}


def _preprocess(image: np.ndarray, crop_size: int) -> torch.Tensor:
    """As training: centred pad/crop of ``[..., H, W]`` to ``crop_size`` (records are already scaled per slice)."""
    scaled = image.astype(np.float32)
    h, w = scaled.shape[-2:]
    out = np.zeros(scaled.shape[:-2] + (crop_size, crop_size), np.float32)
    src_r, src_c = max(0, (h - crop_size) // 2), max(0, (w - crop_size) // 2)
    dst_r, dst_c = max(0, (crop_size - h) // 2), max(0, (crop_size - w) // 2)
    ch, cw = min(h, crop_size), min(w, crop_size)
    out[..., dst_r:dst_r + ch, dst_c:dst_c + cw] = scaled[..., src_r:src_r + ch, src_c:src_c + cw]
    return torch.from_numpy(out)


def multi_crop_offsets(crop_size: int, patch_size: int):
    """The 4 fixed corner crops ``(row, col)`` of a ``patch_size`` window inside ``crop_size`` (paper: 4 crops)."""
    far = crop_size - patch_size
    if far < 0:
        raise ValueError(f"patch_size {patch_size} exceeds crop_size {crop_size}")
    return [(0, 0), (0, far), (far, 0), (far, far)]


@torch.no_grad()
def predict_lvquan(network: torch.nn.Module, data, subjects: Sequence[int], index_scale, *, crop_size: int,
                   patch_size: int, clip_frames: Optional[int] = None, target_spacing_mm: Optional[float] = 1.0,
                   input_mode: str = "single", device: Optional[torch.device] = None) -> Dict[str, np.ndarray]:
    """Per-frame predictions of ``subjects`` averaged over the 4 fixed crops (and, for 2D+t, over every
    cyclic window containing the frame).

    Returns:
        ``indices [N, 11]`` in mm/mm^2 (outputs x ``index_scale``), ``phase_probability [N]``
        (systole; NaN when the task has no phase), ``target_indices [N, 11]``, ``target_phase [N]``,
        ``subject_index [N]``, ``frame [N]``; N = subjects x frames.
    """
    from cmrssl.data.lvquan import lvquan_records
    from cmrssl.networks.lvquan import split_outputs

    network.eval()
    device = device or next(network.parameters()).device
    index_scale = np.asarray(index_scale, np.float64)
    task = network.task
    offsets = multi_crop_offsets(crop_size, patch_size)
    num_frames = data.images.shape[1]
    rows: Dict[str, list] = {k: [] for k in ("indices", "phase_probability", "target_indices", "target_phase",
                                             "subject_index", "frame")}
    for s in subjects:
        frames = lvquan_records(data, [s], index_scale, target_spacing_mm, input_mode)
        images = np.stack([f["image"] for f in frames])  # [T, C, H, W]
        sums = np.zeros((num_frames, 11))
        phase_sums = np.zeros(num_frames)
        counts = np.zeros(num_frames)
        if clip_frames is None:
            batch = torch.stack([_preprocess(images[t], crop_size) for t in range(num_frames)])  # [T, C, P, P]
            windows = [(batch, np.arange(num_frames)[:, None])]
        else:
            clips = [np.stack([images[(start + k) % num_frames] for k in range(clip_frames)], axis=1)
                     for start in range(num_frames)]  # [C, N_S, H, W] each
            batch = torch.stack([_preprocess(c, crop_size) for c in clips])  # [T, C, N_S, P, P]
            which = (np.arange(num_frames)[:, None] + np.arange(clip_frames)[None]) % num_frames
            windows = [(batch, which)]
        for batch, which in windows:
            for r, c in offsets:
                crop = batch[..., r:r + patch_size, c:c + patch_size].to(device)
                parts = split_outputs(network(crop), task)
                indices = parts.get("indices")
                logits = parts.get("phase_logits")
                if indices is not None:
                    values = indices.cpu().numpy().astype(np.float64)
                    values = values if values.ndim == 3 else values[..., None]  # [B, 11, N_S]
                    np.add.at(sums, which.ravel(), np.moveaxis(values, 1, 2).reshape(-1, 11))
                if logits is not None:
                    prob = torch.softmax(logits, dim=1)[:, 1].cpu().numpy()
                    prob = prob if prob.ndim == 2 else prob[:, None]
                    np.add.at(phase_sums, which.ravel(), prob.reshape(-1))
                np.add.at(counts, which.ravel(), 1)
        has_indices = task in ("indices", "both")
        rows["indices"].append(sums / counts[:, None] * index_scale if has_indices else np.full((num_frames, 11), np.nan))
        rows["phase_probability"].append(phase_sums / counts if task != "indices" else np.full(num_frames, np.nan))
        rows["target_indices"].append(data.indices[s])
        rows["target_phase"].append(data.phase[s].astype(np.int64))
        rows["subject_index"].append(np.full(num_frames, s))
        rows["frame"].append(np.arange(num_frames))
    return {k: np.concatenate(v) for k, v in rows.items()}


def write_oof_predictions(path, predictions: Dict[str, np.ndarray], subjects: Sequence[str], *, overwrite: bool = False):
    """Out-of-fold predictions as ``.npz`` (written whole; refused when present unless ``overwrite``)."""
    from pathlib import Path

    from cmrssl.io.atomic import atomic_file

    path = Path(path)
    with atomic_file(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, subject_names=np.asarray(list(subjects)), **predictions)
    return path


def evaluate_fold(network: torch.nn.Module, data, validation: Sequence[int], index_scale, path, *, crop_size: int,
                  patch_size: int, clip_frames: Optional[int] = None, target_spacing_mm: Optional[float] = 1.0,
                  input_mode: str = "single", overwrite: bool = False) -> str:
    """Predict the held-out subjects, write the out-of-fold ``.npz`` and return the Table 1 text."""
    from cmrssl.metrics.lvquan_ensemble import format_table, prediction_table

    predictions = predict_lvquan(network, data, validation, index_scale, crop_size=crop_size, patch_size=patch_size,
                                 clip_frames=clip_frames, target_spacing_mm=target_spacing_mm, input_mode=input_mode)
    write_oof_predictions(path, predictions, data.subjects, overwrite=overwrite)
    table = prediction_table(predictions["indices"], predictions["phase_probability"], predictions["target_indices"],
                             predictions["target_phase"])
    return format_table(table, f"{len(validation)} held-out slice cycle(s), {len(predictions['frame'])} frames -> {path}")


def study_slices(num_slices: int, slices=None, source: str = "study") -> list:
    """Slice indices to predict: None -> the middle slice, ``"all"``, an int, a list or ``"3,4,5"``.

    Raises:
        ValueError: an index outside ``0..num_slices-1`` (names ``source``).
    """
    if slices is None or (isinstance(slices, str) and slices.strip().lower() in ("", "mid", "middle")):
        return [num_slices // 2]
    if isinstance(slices, str) and slices.strip().lower() == "all":
        return list(range(num_slices))
    wanted = [int(z) for z in (slices.split(",") if isinstance(slices, str) else np.atleast_1d(slices))]
    bad = [z for z in wanted if not 0 <= z < num_slices]
    if bad or not wanted:
        raise ValueError(f"{source}: slice(s) {bad or wanted} not in 0..{num_slices - 1}")
    return wanted


def infer_study(network: torch.nn.Module, study, index_scale, output_dir, *, slices=None, crop_size: int,
                patch_size: int, clip_frames: Optional[int] = None, target_spacing_mm: Optional[float] = 1.0,
                input_mode: str = "single", overwrite: bool = False) -> str:
    """LV indices and phase of every frame of the chosen short-axis slices of one cine.

    ``study`` is anything :func:`cmrssl.io.read_cine` reads (DICOM folder, NIfTI cine, folder of
    NIfTI frames). The slices are preprocessed as in training and predicted as in evaluation (4
    crops; every window for 2D+t). Writes ``output_dir/lvquan_predictions.csv``: ``slice``,
    ``frame``, the 11 indices in mm / mm^2, ``systole_probability`` and ``phase`` (1 systole);
    written whole, refused when present unless ``overwrite``. Nothing identifying the patient is
    written (no names, no paths).

    Raises:
        FileNotFoundError / CineReadError: unreadable study. ValueError: a 3D input (one frame),
        anisotropic pixels, or slices out of range (the message names the study).
    """
    import csv
    from pathlib import Path

    from cmrssl.data.lvquan import check_isotropic
    from cmrssl.data.lvquan_mat import LVQuanData
    from cmrssl.io import read_cine
    from cmrssl.io.atomic import atomic_file, check_can_write
    from cmrssl.metrics.lv_indices import INDEX_NAMES

    out_path = check_can_write(Path(output_dir) / PREDICTION_FILE, overwrite)
    cine = read_cine(study)
    num_frames, num_slices = cine.pixels.shape[:2]
    if num_frames < 2:
        raise ValueError(f"{study}: one frame only; LV-index inference needs a cine (frames along time)")
    dy, _ = check_isotropic(cine.pixel_spacing_mm, str(study))
    chosen = study_slices(num_slices, slices, str(study))
    images = np.moveaxis(cine.pixels[:, chosen], 1, 0).astype(np.float32)  # [S, T, H, W]
    shape = images.shape[:2]
    data = LVQuanData(images=images, labels=np.zeros(images.shape, np.uint8),
                      areas_mm2=np.full(shape + (2,), np.nan), dims_mm=np.full(shape + (3,), np.nan),
                      rwt_mm=np.full(shape + (6,), np.nan), phase=np.zeros(shape, np.int8),
                      pixel_spacing_mm=np.full(len(chosen), dy), subjects=[f"slice{z}" for z in chosen])
    predictions = predict_lvquan(network, data, range(len(chosen)), index_scale, crop_size=crop_size,
                                 patch_size=patch_size, clip_frames=clip_frames, target_spacing_mm=target_spacing_mm,
                                 input_mode=input_mode)
    with atomic_file(out_path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["slice", "frame", *INDEX_NAMES, "systole_probability", "phase"])
            for row in range(len(predictions["frame"])):
                probability = predictions["phase_probability"][row]
                has_phase = np.isfinite(probability)
                writer.writerow([chosen[predictions["subject_index"][row]], predictions["frame"][row],
                                 *(f"{v:.3f}" if np.isfinite(v) else "" for v in predictions["indices"][row]),
                                 f"{probability:.4f}" if has_phase else "", int(probability > 0.5) if has_phase else ""])
    return f"{len(predictions['frame'])} frames of slice(s) {chosen} -> {out_path}"


@torch.no_grad()
def recalibrate_batchnorm(network: torch.nn.Module, records: Sequence[Dict], *, crop_size: int, patch_size: int,
                          batch_size: int = 16, device: Optional[torch.device] = None) -> int:
    """Recompute every BatchNorm's running statistics on the inputs evaluation will see.

    Training augments (rotation and zoom with zero padding, random crops), so the running
    statistics describe augmented images; on clean evaluation crops the features then shift,
    and the regressed indices with them (on ACDC, cavity areas came out about a third low in eval mode
    while train-mode BatchNorm on the same crops was unbiased). This pass sets them to the
    cumulative mean/variance over the 4 fixed crops of every (unaugmented) training ``records``
    image (precise BatchNorm; Wu & Johnson 2021). Weights are untouched.

    Returns:
        the number of crops seen. The network is left in eval mode.
    """
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or not records:
        network.eval()
        return 0
    device = device or next(network.parameters()).device
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every batch below
    network.train()
    offsets = multi_crop_offsets(crop_size, patch_size)
    seen = 0
    try:
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            if len(chunk) < 2:  # BatchNorm in training mode needs 2 values per channel
                continue
            batch = torch.stack([_preprocess(np.asarray(r["image"]), crop_size) for r in chunk])
            for r, c in offsets:
                network(batch[..., r:r + patch_size, c:c + patch_size].to(device))
                seen += len(batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        network.eval()
    return seen


class BatchNormRecalibration:
    """Ignite handler: :func:`recalibrate_batchnorm` when training completes (attach it before the
    checkpoint saver, so the saved model holds the recalibrated statistics)."""

    def __init__(self, network: torch.nn.Module, records: Sequence[Dict], crop_size: int, patch_size: int,
                 batch_size: int = 16, enabled: bool = True):
        self.network, self.records = network, records
        self.crop_size, self.patch_size, self.batch_size = crop_size, patch_size, batch_size
        self.enabled = enabled

    def attach(self, engine) -> None:
        from ignite.engine import Events

        if self.enabled:
            engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine) -> None:
        import logging

        seen = recalibrate_batchnorm(self.network, self.records, crop_size=self.crop_size, patch_size=self.patch_size,
                                     batch_size=self.batch_size)
        logging.getLogger(__name__).info(f"BatchNorm statistics recalibrated on {seen} unaugmented training crops")
        self.network.train()  # the trainer's state is left as it was
