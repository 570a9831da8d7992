"""Checkpoints in and out of the shared U-Net: one place that reads them and says what is wrong.

- :func:`read_state_dict`: a ``{name: tensor}`` dict from any checkpoint file
  this project writes or accepts (loaded with ``weights_only=True``).
- :func:`load_network_checkpoint`: a trained model's checkpoint into the network
  it was trained as, strictly (every key, every shape); every bundle and tool
  that evaluates, infers or exports loads through it.
- :func:`load_pretrained`: a pretraining bundle's checkpoint into a U-Net by
  parameter name (``encoder.*``, and ``decoder.*`` when present); every encoder
  weight must be there, nothing may have the wrong shape or belong to another
  architecture.
- :func:`prepare_finetuning`: the segmentation bundle's ``--finetune_mode``
  (scratch / decoder / all / multitask) applied to a freshly built network; a pretrained
  start has its scale-free weights brought to the fresh network's scale (:func:`match_initial_scale`).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Union

import torch
import torch.nn as nn
from monai.networks.blocks.dynunet_block import UnetOutBlock

from cmrssl.io.run_state import unfinished_run_note
from cmrssl.networks.multitask import MULTITASK_SCHEDULES, PRETEXT_HEAD, MultiTaskUNet

__all__ = [
    "FINETUNE_MODES",
    "SEGMENTATION_HEADS",
    "PretrainedLoadReport",
    "load_torch_file",
    "read_state_dict",
    "state_dict_differences",
    "load_network_checkpoint",
    "load_pretrained",
    "freeze_parts",
    "scale_free_weights",
    "match_initial_scale",
    "INITIAL_SCALE_RULE",
    "prepare_finetuning",
    "check_schedule",
]

logger = logging.getLogger(__name__)

#: Fine-tuning modes of de Mooij et al. 2024 / Bai et al. 2019: train from random weights;
#: SSL+Decoder (pretrained encoder frozen); SSL+All (every weight trained); SSL+MultiTask
#: (all weights, the pretext head kept and its loss added with weight beta).
FINETUNE_MODES = ("scratch", "decoder", "all", "multitask")

#: the U-Net's output heads: taken from a whole segmentation network's checkpoint (same classes), so fine-tuning a
#: trained model continues it; a pretraining checkpoint has none and they start new
SEGMENTATION_HEADS = ("head", "aux_heads")

_WRAPPER_ENTRIES = ("state_dict", "model", "network", "backbone")
_WRAPPER_PREFIXES = ("module.", "backbone.")


_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


def _why_not_loaded(error: BaseException) -> str:
    """torch.load's error in one line: its several paragraphs (and terminal colour codes) would hide the file name."""
    text = _ANSI_CODES.sub("", str(error))
    refused = re.search(r"WeightsUnpickler error: (.*?)(?:\. Please|\n|$)", text)
    if refused:
        return (f"it holds Python objects that loading with weights_only=True refuses ({refused.group(1).strip()}); "
                "save the network's state_dict() instead")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def load_torch_file(path: Union[str, os.PathLike], what: str = "a readable PyTorch checkpoint"):
    """``torch.load(path)`` on CPU with ``weights_only=True``; a file it cannot load is named, in one line.

    Raises:
        ValueError: ``<path>: not <what> (<the reason, one line>)``.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors do not name the file, and span several lines
        raise ValueError(f"{path}: not {what} ({_why_not_loaded(error)})") from error


def read_state_dict(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """The state dict stored in ``path``, loaded on CPU with ``weights_only=True``.

    Accepts a plain ``{name: tensor}`` dict, or one nested under ``state_dict`` /
    ``model`` / ``network`` / ``backbone``; a ``module.`` (DDP) or ``backbone.``
    prefix shared by every key is dropped.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a PyTorch checkpoint or holds no tensors (message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    loaded = load_torch_file(path)
    if isinstance(loaded, dict):
        for entry in _WRAPPER_ENTRIES:
            if isinstance(loaded.get(entry), dict):
                loaded = loaded[entry]
                break
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path}: holds no state dict of tensors")
    state = dict(loaded)
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _listing(keys: Sequence[str], limit: int = 8) -> str:
    keys = list(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def state_dict_differences(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> List[str]:
    """What keeps ``state`` from loading strictly into a module whose state dict is ``expected``.

    Returns one item per kind of problem (``missing keys: ...``, ``unexpected keys: ...``,
    ``shape mismatches: name: checkpoint (..) vs network (..)``), each listing a few keys;
    empty when it loads. Used wherever a saved state meets a freshly built network (a
    trained model, a training run to resume), so every such error reads the same.
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if isinstance(state[k], torch.Tensor) and isinstance(expected[k], torch.Tensor)
        and state[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    return problems


def load_network_checkpoint(network: torch.nn.Module, checkpoint: Union[str, os.PathLike]) -> torch.nn.Module:
    """Load a trained checkpoint into ``network`` strictly, with an error naming the file.

    Accepts a plain state dict (what the bundle's CheckpointSaver writes as
    ``models/model.pt``) or a dict holding it under ``"model"``,
    ``"network"`` or ``"state_dict"``; a ``module.`` prefix (DDP) is dropped,
    and so is the ``pretext_head.*`` of a multi-task fine-tuned model.

    Raises:
        FileNotFoundError: no file at ``checkpoint`` (naming an unfinished training run
            towards it, :mod:`cmrssl.engines.training_run`, when there is one).
        ValueError: missing or unexpected keys, or shape mismatches (listed).
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        note = unfinished_run_note(checkpoint)  # a stopped run is not a model: say so instead of loading it
        raise FileNotFoundError(
            f"{checkpoint}: checkpoint not found; "
            + (f"{note}: finish it with the training config and --resume true" if note
               else "train the bundle or pass --checkpoint PATH")
        )
    state = read_state_dict(checkpoint)
    # a multi-task fine-tuned model carries its pretext head, which segmentation does not use
    state = {k: v for k, v in state.items() if not k.startswith("pretext_head.")}
    problems = state_dict_differences(network.state_dict(), state)
    if problems:
        raise ValueError(
            f"{checkpoint}: checkpoint does not match the network {type(network).__name__}; " + "; ".join(problems)
        )
    network.load_state_dict(state, strict=True)
    return network


@dataclass
class PretrainedLoadReport:
    """What :func:`load_pretrained` did: keys loaded, network keys left as they were, checkpoint keys ignored."""

    checkpoint: str
    loaded_keys: List[str] = field(default_factory=list)
    missing_keys: List[str] = field(default_factory=list)
    ignored_keys: List[str] = field(default_factory=list)


def load_pretrained(
    network: nn.Module,
    checkpoint: Union[str, os.PathLike],
    parts: Sequence[str] = ("encoder", "decoder"),
    required_parts: Sequence[str] = ("encoder",),
    optional_parts: Sequence[str] = (),
) -> PretrainedLoadReport:
    """Load the ``parts`` of a pretrained checkpoint into ``network`` in place, by parameter name.

    Args:
        network: the shared U-Net (:class:`cmrssl.networks.unet.CMRUNet`) or any
            module whose state-dict names start with the part names.
        checkpoint: a ``cmr_ssp_pretraining`` checkpoint
            (``encoder.*`` [+ ``decoder.*``]), or a whole trained network.
        parts: top-level names taken from the checkpoint; checkpoint keys of other
            parts (a task head, a projection head) are ignored and reported.
        required_parts: parts whose every network weight must be in the checkpoint.
        optional_parts: parts taken too when the checkpoint holds every weight of the network's part with its
            shape (a whole trained network's ``head``), else left as initialised and reported as ignored
            (another class count, or a pretraining checkpoint without them).

    Returns:
        :class:`PretrainedLoadReport`; ``missing_keys`` lists the network's weights
        not loaded (e.g. the decoder and head for a contrastive checkpoint).

    Raises:
        FileNotFoundError, ValueError (from :func:`read_state_dict`).
        ValueError: a required weight missing, a key of ``parts`` the network does not
            have (another architecture), or a shape mismatch; the message names the
            file and lists the keys. Nothing is loaded then.
    """
    state = read_state_dict(checkpoint)
    target = network.state_dict()
    wanted = tuple(f"{p}." for p in parts)
    selected = {k: v for k, v in state.items() if k.startswith(wanted)}
    for part in optional_parts:
        own = {k: v for k, v in network.state_dict().items() if k.startswith(f"{part}.")}
        if own and all(k in state and state[k].shape == v.shape for k, v in own.items()):
            selected.update({k: state[k] for k in own})
    ignored = sorted(k for k in state if k not in selected)
    problems = []
    if not selected:
        problems.append(f"no weights under {list(parts)} (its keys look like {_listing(sorted(state), 3)})")
    required = tuple(f"{p}." for p in required_parts)
    missing_required = sorted(k for k in target if k.startswith(required) and k not in selected)
    if selected and missing_required:
        problems.append(f"missing keys: {_listing(missing_required)}")
    unexpected = sorted(k for k in selected if k not in target)
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    mismatched = sorted(
        f"{k}: checkpoint {tuple(v.shape)} vs network {tuple(target[k].shape)}"
        for k, v in selected.items()
        if k in target and v.shape != target[k].shape
    )
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    if problems:
        raise ValueError(
            f"{checkpoint}: does not fit the network {type(network).__name__} "
            f"(was it pretrained with the same network_def?); " + "; ".join(problems)
        )
    network.load_state_dict(selected, strict=False)
    report = PretrainedLoadReport(
        checkpoint=str(checkpoint),
        loaded_keys=sorted(selected),
        missing_keys=sorted(k for k in target if k not in selected),
        ignored_keys=ignored,
    )
    logger.info(
        "%s: loaded %d pretrained tensors (%s); %d network tensors keep their initialisation; %d ignored",
        checkpoint, len(report.loaded_keys), ", ".join(sorted({k.split(".")[0] for k in selected})),
        len(report.missing_keys), len(report.ignored_keys),
    )
    return report


def freeze_parts(network: nn.Module, parts: Sequence[str]) -> List[str]:
    """Switch off the gradients of the named parts (e.g. ``["encoder"]``); returns the frozen parameter names.

    Raises:
        ValueError: a part the network does not have.
    """
    frozen = []
    for part in parts:
        module = getattr(network, part, None)
        if not isinstance(module, nn.Module):
            raise ValueError(f"{type(network).__name__} has no part '{part}' to freeze")
        for name, param in module.named_parameters():
            param.requires_grad_(False)
            frozen.append(f"{part}.{name}")
    return frozen


#: what :func:`prepare_finetuning` does to a pretrained start's scale; part of a pretrained arm's study hash
#: (``cmrssl.study.budgets.budget_hash``), so that changing it re-runs those arms and no other
INITIAL_SCALE_RULE = "conv weights that feed a normalisation: each at its fresh initialisation's norm (v1)"


def scale_free_weights(network: nn.Module) -> List[str]:
    """Names of the convolution weights whose scale the network's output does not see: the ``convK`` of a block
    whose ``normK`` (instance, batch, group or layer norm) follows it directly, as in MONAI's ``UnetBasicBlock``
    and ``UnetResBlock`` (the shared U-Net's every 3x3 convolution). Transposed convolutions and heads feed no
    normalisation, so they are not listed."""
    norms = (nn.modules.instancenorm._InstanceNorm, nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    names = []
    for prefix, module in network.named_modules():
        for k in (1, 2, 3):
            conv, norm = getattr(module, f"conv{k}", None), getattr(module, f"norm{k}", None)
            layer = getattr(conv, "conv", conv)
            if isinstance(norm, norms) and isinstance(layer, nn.modules.conv._ConvNd) and layer.bias is None:
                names.append(f"{prefix}.conv{k}{'.conv' if layer is not conv else ''}.weight".lstrip("."))
    return names


def match_initial_scale(network: nn.Module, initial_norms: Mapping[str, float], names: Sequence[str]) -> Dict[str, float]:
    """Rescale each named weight of ``network`` in place to its norm in ``initial_norms``; returns the factors.

    A weight listed by :func:`scale_free_weights` can be scaled without changing what the network computes (the
    normalisation after it divides the scale out), but its size sets how fast an optimiser turns it: Adam moves
    every element by about the learning rate, so a weight 20x its initial norm turns about 20x more slowly.
    Pretraining with SGD at a high learning rate grows these weights (SimCLR on the study's 192 frames: 6-22x its
    initial norm), and fine-tuned as they are, the pretrained encoder barely moves (docs/study.md). Brought back
    to the fresh network's norms, a pretrained start is fine-tuned at the same effective learning rate as a
    scratch one."""
    factors = {}
    with torch.no_grad():
        parameters = dict(network.named_parameters())
        for name in names:
            weight = parameters[name]
            norm = float(weight.norm())
            if norm > 0 and initial_norms.get(name, 0) > 0:
                factors[name] = initial_norms[name] / norm
                weight.mul_(factors[name])
    return factors


def _with_pretext_head(network: nn.Module, checkpoint: str, mask_patch_size, mask_ratio, schedule: str) -> nn.Module:
    """``network`` wrapped with the checkpoint's pixel-wise pretext head (multi-task fine-tuning)."""
    prefix = f"{PRETEXT_HEAD}."
    head_state = {k[len(prefix):]: v for k, v in read_state_dict(checkpoint).items() if k.startswith(prefix)}
    if not head_state:
        raise ValueError(
            f"{checkpoint}: finetune_mode 'multitask' needs a checkpoint with a pixel-wise pretext head "
            f"({prefix}*, written by cmr_ssp_pretraining's mim.json or cmr_position_ssl); this one has none. "
            "Use --finetune_mode all or decoder with contrastive (SimCLR, PCL, DINO) checkpoints"
        )
    weight = head_state.get("conv.conv.weight")
    if weight is None or weight.ndim != 2 + int(network.spatial_dims):
        raise ValueError(f"{checkpoint}: {prefix}* is not a 1x1 convolution head (keys {sorted(head_state)})")
    head = UnetOutBlock(network.spatial_dims, int(weight.shape[1]), int(weight.shape[0]))
    try:
        head.load_state_dict(head_state)
    except RuntimeError as error:
        raise ValueError(f"{checkpoint}: its pretext head does not fit: {error}") from error
    if int(weight.shape[1]) != network.channels[0]:
        raise ValueError(
            f"{checkpoint}: pretext head takes {int(weight.shape[1])} channels, the network's last decoder "
            f"stage gives {network.channels[0]}"
        )
    return MultiTaskUNet(network, head, mask_patch_size=mask_patch_size, mask_ratio=mask_ratio, schedule=schedule)


def check_schedule(finetune_mode: str, multitask_schedule: str) -> str:
    """The normalised ``multitask_schedule``, refused when unknown or non-``sum`` outside multitask mode.

    Raises:
        ValueError: naming the option and what it needs.
    """
    mode = str(finetune_mode).strip().lower()
    schedule = str(multitask_schedule).strip().lower()
    if schedule not in MULTITASK_SCHEDULES:
        raise ValueError(f"multitask_schedule must be one of {list(MULTITASK_SCHEDULES)}, got {multitask_schedule!r}")
    if schedule != "sum" and mode != "multitask":
        raise ValueError(f"--multitask_schedule {schedule} needs --finetune_mode multitask (got {mode!r})")
    return schedule


def prepare_finetuning(
    network: nn.Module,
    pretrained_checkpoint: Union[str, os.PathLike, None] = "",
    finetune_mode: str = "scratch",
    pretext_mask_patch_size: Sequence[int] = (32, 32),
    pretext_mask_ratio: float = 0.75,
    multitask_schedule: str = "sum",
) -> nn.Module:
    """Apply a fine-tuning mode to ``network`` and return the network to train.

    - ``scratch``: nothing loaded (``pretrained_checkpoint`` must be empty);
    - ``decoder``: encoder (and decoder when the checkpoint has one) loaded, encoder frozen;
    - ``all``: loaded, every weight trained;

    A checkpoint that brings no trained head (a pretraining's) is a start: its scale-free weights
    (:func:`scale_free_weights`) are brought to this fresh network's norms (:func:`match_initial_scale`,
    :data:`INITIAL_SCALE_RULE`), which changes nothing the network computes, only how fast fine-tuning turns them.
    A whole trained network with the same heads is continued as it is.

    In the pretrained modes the output heads (``head``, ``aux_heads``) are loaded as well when the checkpoint is a
    whole segmentation network with the same heads (continuing a trained model); a pretraining checkpoint
    leaves them new.
    - ``multitask``: as ``all``, and the checkpoint's pixel-wise pretext head kept:
      returns a :class:`cmrssl.networks.multitask.MultiTaskUNet` (for a reconstruction
      head, masks of ``pretext_mask_patch_size`` pixels, ``pretext_mask_ratio`` masked)
      trained on ``multitask_schedule``: ``sum`` (the pretext loss added by
      :class:`cmrssl.losses.segmentation.MultiTaskLoss`) or ``alternate``
      (:class:`cmrssl.engines.multitask.AlternatingPretextSteps`).

    Raises:
        ValueError: unknown mode, a pretrained mode without a checkpoint, a
            checkpoint with ``scratch``, a multitask checkpoint without a pretext
            head, a class-map head with the ``sum`` schedule, an ``alternate`` schedule
            outside multitask mode, or the errors of :func:`load_pretrained`.
    """
    mode = str(finetune_mode).strip().lower()
    if mode not in FINETUNE_MODES:
        raise ValueError(f"finetune_mode must be one of {list(FINETUNE_MODES)}, got {finetune_mode!r}")
    schedule = check_schedule(mode, multitask_schedule)
    checkpoint = str(pretrained_checkpoint or "").strip()
    if mode == "scratch":
        if checkpoint:
            raise ValueError(
                f"--pretrained_checkpoint {checkpoint} given with finetune_mode 'scratch'; "
                "pass --finetune_mode decoder|all|multitask to use it"
            )
        return network
    if not checkpoint:
        raise ValueError(f"finetune_mode '{mode}' needs --pretrained_checkpoint PATH (a pretraining bundle's model)")
    scale_free = scale_free_weights(network)
    initial = {name: float(weight.detach().norm()) for name, weight in network.named_parameters() if name in scale_free}
    report = load_pretrained(network, checkpoint, optional_parts=SEGMENTATION_HEADS)
    if not any(k.startswith(tuple(f"{h}." for h in SEGMENTATION_HEADS)) for k in report.loaded_keys):
        # a start, not a model to continue (no trained head came with it): INITIAL_SCALE_RULE
        factors = match_initial_scale(network, initial, [n for n in scale_free if n in report.loaded_keys])
        if factors:
            values = sorted(factors.values())
            logger.info("%s: %d scale-free pretrained weights brought to their initial norm (factors %.3g to %.3g); "
                        "what the network computes is unchanged", checkpoint, len(values), values[0], values[-1])
    if mode == "decoder":
        frozen = freeze_parts(network, ["encoder"])
        logger.info("finetune_mode decoder: %d encoder tensors frozen", len(frozen))
    if mode == "multitask":
        return _with_pretext_head(network, checkpoint, pretext_mask_patch_size, pretext_mask_ratio, schedule)
    return network
