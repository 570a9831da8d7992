"""Glue of the LVQuan bundle: training batches, multi-crop evaluation as a MONAI ``SupervisedEvaluator``,
writer handlers of its outputs, and the BatchNorm recalibration.

Evaluation (``configs/evaluate.json``) and inference (``configs/inference.json``)
are MONAI evaluators built from the configs: the records of
:mod:`cmrssl.data.lvquan` go through the bundle's deterministic ``preprocessing``
(training's pad/crop to ``crop_size``), :class:`CornerCropInferer` averages the
network over the 4 fixed corner crops of ``patch_size`` (the paper's
multi-crop evaluation), the ``postprocessing``
(:class:`cmrssl.transforms.lvquan.LVQuanOutputsd`) turns that into indices in
mm / mm^2 and a systole probability, and a handler averages every prediction
of a frame (for 2D+t, the ``clip_frames`` cyclic windows holding it) and
writes the result whole when the run completes:

- :class:`OutOfFoldWriter`: ``oof_predictions.npz`` of the held-out fold (read
  by :mod:`cmrssl.engines.lvquan_ensemble`) and the Table 1 errors printed;
- :class:`StudyPredictionWriter`: ``lvquan_predictions.csv`` of a new cine.

:func:`predict_lvquan` runs the same evaluator from Python.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer
from monai.transforms import Compose, EnsureTyped, ResizeWithPadOrCropd
from torch.optim.swa_utils import update_bn

from cmrssl.data.lvquan import check_isotropic, fold_records
from cmrssl.data.lvquan_mat import LVQuanData
from cmrssl.flags import as_bool
from cmrssl.io import read_cine
from cmrssl.io.atomic import atomic_file, check_can_write
from cmrssl.lvquan_layout import NUM_INDICES, split_outputs
from cmrssl.metrics.lv_indices import INDEX_NAMES
from cmrssl.metrics.lvquan_ensemble import format_table, prediction_table
from cmrssl.transforms.lvquan import PHASE_PROBABILITY_KEY, PRED_INDICES_KEY, LVQuanOutputsd

__all__ = [
    "prepare_lvquan_batch", "TARGET_KEYS", "PREDICTION_FILE", "OOF_FILE", "INDEX_SCALE_FILE",
    "multi_crop_offsets", "corner_crops", "CornerCropInferer", "evaluation_preprocessing",
    "FramePredictions", "OutOfFoldWriter", "StudyPredictionWriter", "write_oof_predictions",
    "predict_lvquan", "read_index_scale", "study_slices", "read_study_slices",
    "recalibrate_batchnorm", "BatchNormRecalibration",
]

logger = logging.getLogger(__name__)

#: The per-frame table :class:`StudyPredictionWriter` writes (``configs/inference.json``).
PREDICTION_FILE = "lvquan_predictions.csv"
#: The held-out predictions :class:`OutOfFoldWriter` writes (``configs/evaluate.json``).
OOF_FILE = "oof_predictions.npz"
#: Written beside ``model.pt`` by ``configs/train.json``: the per-index training maxima.
INDEX_SCALE_FILE = "index_scale.json"

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


def read_index_scale(model_dir: Union[str, os.PathLike]) -> np.ndarray:
    """``[11]`` index scale (training maxima, mm / mm^2) of the model in ``model_dir``.

    Raises:
        FileNotFoundError: no ``index_scale.json`` there (the fold was not trained to the end).
    """
    path = Path(model_dir) / INDEX_SCALE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; it is written beside model.pt when training completes")
    return np.asarray(json.loads(path.read_text())["index_scale"], np.float64)


# ------------------------------------------------------------------ multi-crop inference
def multi_crop_offsets(crop_size: int, patch_size: int):
    """The 4 fixed corner crops ``(row, col)`` of a ``patch_size`` window inside ``crop_size`` (paper: 4 crops)."""
    far = crop_size - patch_size
    if far < 0:
        raise ValueError(f"patch_size {patch_size} exceeds crop_size {crop_size}")
    return [(0, 0), (0, far), (far, 0), (far, far)]


def corner_crops(images: torch.Tensor, patch_size: int) -> List[torch.Tensor]:
    """The 4 corner crops ``[..., patch_size, patch_size]`` of square ``images [..., S, S]`` (views)."""
    return [images[..., r:r + patch_size, c:c + patch_size]
            for r, c in multi_crop_offsets(int(images.shape[-1]), patch_size)]


class CornerCropInferer(Inferer):
    """Multi-crop inference: the network on the 4 corner crops, averaged.

    Args:
        patch_size: side of each crop (pixels); the input is ``[B, C, (T,) S, S]`` after the
            bundle's pad/crop to ``S = crop_size``.
        task: the network's task (:data:`cmrssl.lvquan_layout.TASK_OUTPUTS`).

    Returns ``[B, n(, T)]`` float64 in the network's channel layout, where the index channels are
    the mean of the crops' outputs (scaled 0-1) and the 2 phase channels the mean of the crops'
    softmax probabilities (diastole, systole), not logits.
    """

    def __init__(self, patch_size: int, task: str = "both") -> None:
        super().__init__()
        self.patch_size = int(patch_size)
        self.task = task

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        total = None
        crops = corner_crops(inputs, self.patch_size)
        for crop in crops:
            output = network(crop, *args, **kwargs)
            parts = split_outputs(output, self.task)
            if "phase_logits" in parts:
                probability = torch.softmax(parts["phase_logits"], dim=1)
                output = probability if "indices" not in parts else torch.cat([parts["indices"], probability], dim=1)
            output = output.double()
            total = output if total is None else total + output
        return total / len(crops)


def evaluation_preprocessing(crop_size: int, spatial_dims: int = 2) -> Compose:
    """The bundle's deterministic ``preprocessing`` (``configs/train.json``) built in Python:
    centred pad/crop of ``image`` (and ``label``) to ``crop_size`` (time kept for 2D+t), tensors."""
    shape = [-1] * (spatial_dims - 2) + [crop_size, crop_size]
    return Compose([
        ResizeWithPadOrCropd(keys=["image", "label"], spatial_size=shape, allow_missing_keys=True),
        EnsureTyped(keys=["image", "label", "indices", "phase"], track_meta=False, allow_missing_keys=True),
    ])


# ------------------------------------------------------------------ writer handlers
class FramePredictions:
    """Ignite handler: average every prediction of each (subject, frame) of ``data`` over an evaluator run.

    Reads, per decollated item, ``subject`` and ``frame`` from the batch and
    ``pred_indices [11(, T)]`` (mm / mm^2) and ``pred_phase_probability [(T)]`` from the output
    (:class:`cmrssl.transforms.lvquan.LVQuanOutputsd`). A 2D+t item starting at ``frame`` predicts
    frames ``frame, frame + 1, ...`` (cyclic).

    Args:
        data: the :class:`cmrssl.data.lvquan_mat.LVQuanData` the records came from (subject
            names, frames per cycle, targets).
    """

    def __init__(self, data: LVQuanData) -> None:
        self.data = data
        self.subject_index = {name: i for i, name in enumerate(data.subjects)}
        self.num_frames = int(data.images.shape[1])
        self.reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def reset(self, engine: Optional[Engine] = None) -> None:
        self._sums: Dict[Tuple[int, int], np.ndarray] = defaultdict(lambda: np.zeros(NUM_INDICES))
        self._phase_sums: Dict[Tuple[int, int], float] = defaultdict(float)
        self._counts: Dict[Tuple[int, int], int] = Counter()

    def collect(self, engine: Engine) -> None:
        for item, output in zip(engine.state.batch, engine.state.output):
            subject = self.subject_index[str(item["subject"])]
            start = int(item["frame"])
            indices = _numpy(output[PRED_INDICES_KEY]).reshape(NUM_INDICES, -1)  # [11, N_S]
            phase = _numpy(output[PHASE_PROBABILITY_KEY]).reshape(-1)  # [N_S]
            for k in range(indices.shape[1]):
                key = (subject, (start + k) % self.num_frames)
                self._sums[key] += indices[:, k]
                self._phase_sums[key] += float(phase[k])
                self._counts[key] += 1

    def predictions(self) -> Dict[str, np.ndarray]:
        """Per-frame means, rows sorted by (subject, frame), every frame of each seen subject.

        Returns:
            ``indices [N, 11]`` mm / mm^2 (NaN when the task has none), ``phase_probability [N]``
            (systole; NaN when the task has no phase), ``target_indices [N, 11]``, ``target_phase [N]``,
            ``subject_index [N]``, ``frame [N]``.

        Raises:
            RuntimeError: a frame of a seen subject was never predicted.
        """
        subjects = sorted({s for s, _ in self._counts})
        rows: Dict[str, list] = defaultdict(list)
        for s in subjects:
            counts = np.array([self._counts.get((s, t), 0) for t in range(self.num_frames)], np.float64)
            if not counts.all():
                raise RuntimeError(
                    f"{self.data.subjects[s]}: frames {np.flatnonzero(counts == 0).tolist()} never predicted")
            rows["indices"].append(np.stack([self._sums[(s, t)] for t in range(self.num_frames)]) / counts[:, None])
            rows["phase_probability"].append(np.array([self._phase_sums[(s, t)] for t in range(self.num_frames)]) / counts)
            rows["target_indices"].append(self.data.indices[s])
            rows["target_phase"].append(self.data.phase[s].astype(np.int64))
            rows["subject_index"].append(np.full(self.num_frames, s))
            rows["frame"].append(np.arange(self.num_frames))
        if not subjects:
            raise RuntimeError("the evaluator predicted nothing (no records)")
        return {k: np.concatenate(v) for k, v in rows.items()}

    def completed(self, engine: Engine) -> None:
        """Subclasses write the result."""


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.as_tensor() if hasattr(x, "as_tensor") else x).numpy()
    return np.asarray(x)


def write_oof_predictions(path, predictions: Dict[str, np.ndarray], subjects: Sequence[str], *, overwrite: bool = False):
    """Out-of-fold predictions as ``.npz`` (written whole; refused when present unless ``overwrite``)."""
    path = Path(path)
    with atomic_file(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, subject_names=np.asarray(list(subjects)), **predictions)
    return path


class OutOfFoldWriter(FramePredictions):
    """:class:`FramePredictions` that writes ``path`` (``oof_predictions.npz``: the
    :meth:`FramePredictions.predictions` arrays and ``subject_names``) whole when the evaluator
    completes, and prints the Table 1 errors of the held-out frames.

    Args:
        path: the ``.npz`` file; refused at construction when present unless ``overwrite``.
        data: see :class:`FramePredictions`.
        overwrite: replace an existing ``path``.
    """

    def __init__(self, path: Union[str, os.PathLike], data: LVQuanData, overwrite: bool = False) -> None:
        super().__init__(data)
        self.overwrite = as_bool(overwrite, "overwrite")
        self.path = check_can_write(Path(path), self.overwrite)
        self.table: dict = {}

    def completed(self, engine: Engine) -> None:
        predictions = self.predictions()
        write_oof_predictions(self.path, predictions, self.data.subjects, overwrite=self.overwrite)
        self.table = prediction_table(predictions["indices"], predictions["phase_probability"],
                                      predictions["target_indices"], predictions["target_phase"])
        cycles = len(np.unique(predictions["subject_index"]))
        table = format_table(self.table,
                             f"{cycles} held-out slice cycle(s), {len(predictions['frame'])} frames -> {self.path}")
        print(table, flush=True)


class StudyPredictionWriter(FramePredictions):
    """:class:`FramePredictions` that writes ``path`` (``lvquan_predictions.csv``) whole when the
    evaluator completes: ``slice``, ``frame``, the 11 indices in mm / mm^2, ``systole_probability``
    and ``phase`` (1 systole; empty where the task lacks it). Nothing identifying the patient.

    Args:
        path: the CSV; refused at construction when present unless ``overwrite``.
        data: the study's slices (:func:`read_study_slices`, subjects named ``slice{z}``).
        overwrite: replace an existing ``path``.
    """

    def __init__(self, path: Union[str, os.PathLike], data: LVQuanData, overwrite: bool = False) -> None:
        super().__init__(data)
        self.overwrite = as_bool(overwrite, "overwrite")
        self.path = check_can_write(Path(path), self.overwrite)

    def completed(self, engine: Engine) -> None:
        predictions = self.predictions()
        slices = [int(name.rsplit("slice", 1)[-1]) for name in self.data.subjects]
        with atomic_file(self.path, overwrite=self.overwrite) as tmp:
            with open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["slice", "frame", *INDEX_NAMES, "systole_probability", "phase"])
                for row in range(len(predictions["frame"])):
                    probability = predictions["phase_probability"][row]
                    has_phase = np.isfinite(probability)
                    writer.writerow([slices[predictions["subject_index"][row]], predictions["frame"][row],
                                     *(f"{v:.3f}" if np.isfinite(v) else "" for v in predictions["indices"][row]),
                                     f"{probability:.4f}" if has_phase else "",
                                     int(probability > 0.5) if has_phase else ""])
        print(f"{len(predictions['frame'])} frames of slice(s) {sorted(set(slices))} -> {self.path}", flush=True)


# ------------------------------------------------------------------ Python entry (same evaluator as the configs)
def predict_lvquan(network: torch.nn.Module, data: LVQuanData, subjects: Sequence[int], index_scale, *, crop_size: int,
                   patch_size: int, clip_frames: Optional[int] = None, target_spacing_mm: Optional[float] = 1.0,
                   input_mode: str = "single", device: Optional[torch.device] = None,
                   batch_size: int = 16) -> Dict[str, np.ndarray]:
    """Per-frame predictions of ``subjects`` averaged over the 4 fixed crops (and, for 2D+t, over every
    cyclic window containing the frame): the evaluator of ``configs/evaluate.json`` run from Python.

    Returns:
        :meth:`FramePredictions.predictions`: ``indices [N, 11]`` in mm / mm^2 (outputs x
        ``index_scale``), ``phase_probability [N]`` (systole; NaN when the task has no phase),
        ``target_indices``, ``target_phase``, ``subject_index``, ``frame``; N = subjects x frames.
    """
    device = device or next(network.parameters()).device
    records = fold_records(data, list(subjects), index_scale, target_spacing_mm, input_mode, clip_frames)
    preprocessing = evaluation_preprocessing(crop_size, 2 if clip_frames is None else 3)
    loader = DataLoader(Dataset(records, preprocessing), batch_size=batch_size, shuffle=False, num_workers=0)
    collector = FramePredictions(data)
    evaluator = SupervisedEvaluator(
        device=device, val_data_loader=loader, network=network, inferer=CornerCropInferer(patch_size, network.task),
        postprocessing=LVQuanOutputsd("pred", task=network.task, index_scale=index_scale), val_handlers=[collector],
        amp=False)
    evaluator.run()
    return collector.predictions()


# ------------------------------------------------------------------ inference on a new cine
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


def read_study_slices(study: Union[str, os.PathLike], slices=None) -> LVQuanData:
    """The chosen short-axis slices of one cine as unlabelled LVQuan "subjects" ``slice{z}``.

    ``study`` is anything :func:`cmrssl.io.read_cine` reads (DICOM folder, NIfTI cine, folder of
    NIfTI frames); ``slices`` as :func:`study_slices`. Images ``[S, T, H, W]``, NaN indices, zero
    labels and phases, the study's pixel spacing.

    Raises:
        FileNotFoundError / CineReadError: unreadable study. ValueError: a 3D input (one frame),
        anisotropic pixels, or slices out of range (the message names the study).
    """
    cine = read_cine(study)
    num_frames, num_slices = cine.pixels.shape[:2]
    if num_frames < 2:
        raise ValueError(f"{study}: one frame only; LV-index inference needs a cine (frames along time)")
    dy, _ = check_isotropic(cine.pixel_spacing_mm, str(study))
    chosen = study_slices(num_slices, slices, str(study))
    images = np.moveaxis(cine.pixels[:, chosen], 1, 0).astype(np.float32)  # [S, T, H, W]
    shape = images.shape[:2]
    return LVQuanData(images=images, labels=np.zeros(images.shape, np.uint8),
                      areas_mm2=np.full(shape + (2,), np.nan), dims_mm=np.full(shape + (3,), np.nan),
                      rwt_mm=np.full(shape + (6,), np.nan), phase=np.zeros(shape, np.int8),
                      pixel_spacing_mm=np.full(len(chosen), dy), subjects=[f"slice{z}" for z in chosen])


# ------------------------------------------------------------------ BatchNorm recalibration
def _corner_crop_batches(loader: Iterable[dict], patch_size: int, counter: List[int]) -> Iterator[torch.Tensor]:
    for batch in loader:
        images = batch["image"]
        if len(images) < 2:  # BatchNorm in training mode needs 2 values per channel
            continue
        for crop in corner_crops(images, patch_size):
            counter[0] += len(crop)
            yield crop


def recalibrate_batchnorm(network: torch.nn.Module, records: Sequence[Dict], *, crop_size: int, patch_size: int,
                          batch_size: int = 16, device: Optional[torch.device] = None,
                          preprocessing: Optional[Callable] = None) -> int:
    """Recompute every BatchNorm's running statistics on the inputs evaluation will see.

    Training augments (rotation and zoom with zero padding, random crops), so the running
    statistics describe augmented images; on clean evaluation crops the features then shift,
    and the regressed indices with them (on ACDC, cavity areas came out about a third low in eval mode
    while train-mode BatchNorm on the same crops was unbiased). This pass sets them, with
    :func:`torch.optim.swa_utils.update_bn`, to the cumulative mean/variance over batches of
    the 4 fixed crops of ``batch_size`` (unaugmented) training ``records`` images after the
    evaluation ``preprocessing`` (default :func:`evaluation_preprocessing` of ``crop_size``);
    a last batch of one image is skipped (precise BatchNorm; Wu & Johnson 2021). Weights are untouched.

    Returns:
        the number of crops seen. The network is left in eval mode.
    """
    network.eval()
    if not records or not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in network.modules()):
        return 0
    device = device or next(network.parameters()).device
    if preprocessing is None:
        preprocessing = evaluation_preprocessing(crop_size, np.asarray(records[0]["image"]).ndim - 1)
    loader = DataLoader(Dataset(list(records), preprocessing), batch_size=batch_size, shuffle=False, num_workers=0)
    seen = [0]
    with torch.no_grad():
        update_bn(_corner_crop_batches(loader, patch_size, seen), network, device=device)
    network.eval()
    return seen[0]


class BatchNormRecalibration:
    """Ignite handler: :func:`recalibrate_batchnorm` when training completes (attach it before the
    checkpoint saver, so the saved model holds the recalibrated statistics).

    Args:
        network, records, crop_size, patch_size, batch_size, preprocessing: as :func:`recalibrate_batchnorm`
            (``preprocessing``: the bundle's ``@preprocessing``).
        enabled: attach nothing when False.
    """

    def __init__(self, network: torch.nn.Module, records: Sequence[Dict], crop_size: int, patch_size: int,
                 batch_size: int = 16, enabled: bool = True, preprocessing: Optional[Callable] = None):
        self.network, self.records = network, records
        self.crop_size, self.patch_size, self.batch_size = crop_size, patch_size, batch_size
        self.enabled = as_bool(enabled, "recalibrate_batchnorm")
        self.preprocessing = preprocessing

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        seen = recalibrate_batchnorm(self.network, self.records, crop_size=self.crop_size, patch_size=self.patch_size,
                                     batch_size=self.batch_size, preprocessing=self.preprocessing)
        logger.info(f"BatchNorm statistics recalibrated on {seen} unaugmented training crops")
        self.network.train()  # the trainer's state is left as it was
