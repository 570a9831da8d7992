"""Options as they arrive from a bundle's command line: yes/no flags, numbers.

``python -m monai.bundle run ... --overwrite false`` hands the config the
string ``"false"``, which Python treats as true: every boolean option of our
configs goes through :func:`as_bool`. ``--max_epochs abc`` hands over the
string ``"abc"``, which would fail deep inside training after the data is
cached: :func:`check_options` checks every option's type and range first.
``--method_name ../../x`` would become a checkpoint path outside ``models/``:
an option that becomes a file or folder name has the rule ``name``, which
refuses anything :func:`safe_name` would change (the one rule that also makes
datalist subjects into folder names, :func:`cmrssl.io.atomic.safe_folder_name`).
An option that is written into a file as a URL has the rule ``url``
(:func:`check_url`): a quote and a newline in ``--weights_url`` would add
entries to the YAML it is written into. A list option has its length in the
rule: ``pixdim_mm`` is ``float>0[2]``.

One option vocabulary (``docs/options.md``): the options every bundle shares
have one name, listed with their rules in :data:`OPTIONS`. A name that was
retired, or a synonym of one of them (``--epochs``, ``--out_dir``), would be
added to the config and then ignored without a word, the run going on with the
default: :data:`RETIRED_OPTIONS` names the option to use, and
:func:`refuse_retired_options` (first in every config's ``initialize``) refuses
such a name before anything is read or built.
"""

from __future__ import annotations

import logging
import numbers
import re
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

__all__ = [
    "as_bool", "check_options", "check_url", "refuse_retired_options", "retired_option_problems", "safe_name",
    "square_pixdim_mm", "MAX_NAME_LENGTH", "OPTIONS", "RETIRED_OPTIONS", "SPACING_SOURCES", "URL_SCHEMES",
]

#: The options the bundles share, one name each, and their rule (:func:`check_options`) where a
#: bundle has them: ``docs/options.md`` gives meanings and defaults. ``pixdim_mm`` may be null
#: where a bundle can keep the native spacing (``|null`` added to the rule there); ``device``
#: defaults to an expression (``torch.device``) and is given on the command line as a string.
#: Where a NIfTI's voxel spacing comes from (``spacing_from``; the rule is :mod:`cmrssl.io.nifti`'s):
#: what the header proves, or one of its two spacings named by the user or the dataset's indexer.
SPACING_SOURCES = ("auto", "sform", "pixdim")

OPTIONS: Dict[str, str] = {
    "max_epochs": "int>=1",
    "epoch_length": "int>=1|null",
    "pixdim_mm": "float>0[2]",
    "num_workers": "int>=0",
    "seed": "int>=0",
    "datalist": "str",
    "dataset_dir": "str",
    "output_dir": "str",
    "checkpoint": "str",
    "overwrite": "bool",
    "resume": "bool",
    "device": "str",
    "spacing_from": "str:" + ",".join(SPACING_SOURCES),
}

#: Option names no bundle takes, each with the option to use instead: names the bundles had
#: before the vocabulary (``epochs``: cmr_ssp_pretraining < 0.3.0 and cmr_lvquan_ensemble
#: < 0.5.0; ``target_spacing_mm``, ``model_dir``, ``prediction_dir``: cmr_lvquan_ensemble
#: < 0.5.0) and common synonyms, which no bundle config may introduce
#: (``tests/bundle/test_option_vocabulary.py``).
RETIRED_OPTIONS: Dict[str, str] = {
    "epochs": "max_epochs",
    "num_epochs": "max_epochs",
    "n_epochs": "max_epochs",
    "steps_per_epoch": "epoch_length",
    "iterations_per_epoch": "epoch_length",
    "target_spacing_mm": "pixdim_mm",
    "spacing_mm": "pixdim_mm",
    "pixdim": "pixdim_mm",
    "workers": "num_workers",
    "n_workers": "num_workers",
    "random_seed": "seed",
    "data_list": "datalist",
    "datalist_file": "datalist",
    "data_dir": "dataset_dir",
    "data_root": "dataset_dir",
    "dataset_root": "dataset_dir",
    "out_dir": "output_dir",
    "output": "output_dir",
    "prediction_dir": "output_dir",
    "save_dir": "output_dir",
    "ckpt": "checkpoint",
    "ckpt_path": "checkpoint",
    "checkpoint_path": "checkpoint",
    "model_path": "checkpoint",
    "model_dir": "checkpoint",
    "force": "overwrite",
    "gpu": "device",
}

#: how a retired option's value changed, where it did (said after the new name)
_RETIRED_VALUE_NOTES: Dict[str, str] = {
    "target_spacing_mm": "a list [dy, dx] of two equal values",
    "spacing_mm": "a list [dy, dx]",
    "pixdim": "a list [dy, dx] in mm",
    "model_dir": "the model file, e.g. runs/fold0/model.pt; its index_scale.json is read beside it",
}

#: the longest file or folder name :func:`safe_name` gives
MAX_NAME_LENGTH = 128
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+|\.{2,}")


def safe_name(name: object) -> str:
    """``name`` as a single, harmless file or folder name: letters, digits, ``.``, ``_`` and ``-`` only.

    Every other run of characters (path separators included) and every ``..``
    becomes one ``_``; dots and underscores at either end are dropped, and the
    result is cut to :data:`MAX_NAME_LENGTH` characters. So ``../../x`` becomes
    ``x`` and ``/data/p1`` becomes ``data_p1``: never a path, never a hidden
    name. The result may be empty (``..``, ``""``).
    """
    return re.sub("_+", "_", _UNSAFE_CHARACTERS.sub("_", str(name))).strip("._")[:MAX_NAME_LENGTH]


def as_bool(value: Any, name: str = "flag") -> bool:
    """``True``/``False`` from a bool, a number or a string (true/false, 1/0, yes/no; empty is false).

    Raises:
        ValueError: any other string (a typo must not mean yes), naming the option.
    """
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", ""):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return lowered in ("true", "1", "yes")
    return bool(value)


#: the URL schemes an option may name (a download location)
URL_SCHEMES = ("http", "https", "file")
# whitespace, control characters, and what RFC 3986 never allows unencoded in a URL
_NOT_IN_URL = re.compile(r'[\x00-\x20\x7f-\x9f"<>\\^`{|}]')


def check_url(value: Any, name: str = "url") -> str:
    """``value`` when it is an http(s) URL with a host, or a file URL, in URL characters only.

    Raises:
        ValueError: naming the option: another scheme, no host, or whitespace, a control
            character or a character a URL holds only percent-encoded (``"`` is ``%22``).
    """
    wanted = f"--{name} must be an http://, https:// or file:// URL"
    if not isinstance(value, str) or not value:
        raise ValueError(f"{wanted}, got {value!r}")
    bad = sorted(set(_NOT_IN_URL.findall(value)))
    if bad:
        raise ValueError(f"{wanted} without whitespace, control characters or {{}}|\\^`<>\" (percent-encode "
                         f"them, e.g. %20 for a space); got {value!r}, which holds {', '.join(map(repr, bad))}")
    try:
        parts = urlsplit(value)
    except ValueError as error:
        raise ValueError(f"{wanted}, got {value!r} ({error})") from None
    if parts.scheme.lower() not in URL_SCHEMES:
        raise ValueError(f"{wanted}, got {value!r}")
    if parts.scheme.lower() != "file" and not parts.hostname:
        raise ValueError(f"{wanted} with a host name, got {value!r}")
    return value


_KINDS = ("int", "float", "bool", "str", "name", "url")


_LIST_RULE = re.compile(r"^(?P<item>.+)\[(?P<length>\d+)\]$")
_KIND_NOUNS = {"int": "whole numbers", "float": "numbers", "bool": "true/false values", "str": "strings",
               "name": "plain names", "url": "URLs"}


def _check_option(name: str, value: Any, rule: str) -> None:
    """One option against a rule such as ``"int>=1"``, ``"bool"``, ``"int>=1|null"``, ``"float>0[2]"`` (a list)."""
    rule = rule.replace(" ", "")
    nullable = rule.endswith("|null")
    rule = rule[: -len("|null")] if nullable else rule
    as_list = _LIST_RULE.match(rule)
    if as_list:  # "float>0[2]": a list of 2 values, each "float>0"
        if value is None and nullable:
            return
        length, item_rule = int(as_list.group("length")), as_list.group("item")
        kind = next((k for k in _KINDS if item_rule.startswith(k)), None)
        if kind is None:
            raise ValueError(f"option rule {rule!r} for {name} must start with one of {_KINDS}")
        if not isinstance(value, (list, tuple)) or len(value) != length:
            raise ValueError(f"--{name} must be a list of {length} {_KIND_NOUNS[kind]}, got {value!r}")
        for item in value:
            _check_option(name, item, item_rule)
        return
    kind = next((k for k in _KINDS if rule.startswith(k)), None)
    if kind is None:
        raise ValueError(f"option rule {rule!r} for {name} must start with one of {_KINDS}")
    bound = rule[len(kind):]
    if value is None:
        if nullable:
            return
        raise ValueError(f"--{name} must be given ({kind}), got nothing (null)")
    if kind == "bool":
        as_bool(value, name)
        return
    if kind == "url":
        if bound:
            raise ValueError(f"option rule {rule!r} for {name}: a url rule takes no bound")
        check_url(value, name)
        return
    if kind == "name":  # the option becomes a file or folder name: refused, not cleaned, when unsafe
        if bound:
            raise ValueError(f"option rule {rule!r} for {name}: a name rule takes no bound")
        if not isinstance(value, str) or not value or safe_name(value) != value:
            raise ValueError(
                f"--{name} must be a plain name (letters, digits, '.', '_', '-'; no path, not starting with "
                f"'.' or '_', at most {MAX_NAME_LENGTH} characters): it becomes a file name; got {value!r}"
            )
        return
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"--{name} must be a string, got {value!r}")
        if bound.startswith(":"):  # "str:a,b,c": one of the listed values
            choices = bound[1:].split(",")
            if value.strip().lower() not in choices:
                raise ValueError(f"--{name} must be one of {', '.join(choices)}, got {value!r}")
        elif bound:
            raise ValueError(f"option rule {rule!r} for {name}: a string rule takes only a list of values (str:a,b)")
        return
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int" and not (numeric and float(value).is_integer()):
        raise ValueError(f"--{name} must be a whole number, got {value!r}")
    if kind == "float" and not numeric:
        raise ValueError(f"--{name} must be a number, got {value!r}")
    if bound:
        operator = ">=" if bound.startswith(">=") else ">" if bound.startswith(">") else None
        if operator is None:
            raise ValueError(f"option rule {rule!r} for {name}: only >= and > bounds are supported")
        limit = float(bound[len(operator):])
        if (operator == ">=" and not value >= limit) or (operator == ">" and not value > limit):
            raise ValueError(f"--{name} must be {operator} {bound[len(operator):]}, got {value!r}")


def check_options(rules: Mapping[str, Sequence[Any]]) -> None:
    """Check a bundle's options before any data is read or any network is built.

    Args:
        rules: ``{option name: [value, rule]}``; a rule is ``int``, ``float``,
            ``bool`` or ``str``, optionally with a bound (``int>=1``, ``float>0``) or,
            for strings, the values allowed (``str:heart,largest_per_label,none``),
            ``name`` for a string that becomes a file or folder name (see :func:`safe_name`),
            ``url`` for a download location (see :func:`check_url`),
            and ``|null`` when the option may be None. In a bundle config the
            values are references: ``"max_epochs": ["@max_epochs", "int>=1"]``.

    Raises:
        ValueError: every option that breaks its rule, one per line, each naming the option.
    """
    problems = []
    for name, entry in rules.items():
        value, rule = entry
        try:
            _check_option(str(name), value, str(rule))
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise ValueError("bad option" + ("s" if len(problems) > 1 else "") + ": " + "; ".join(problems))


def square_pixdim_mm(pixdim_mm: Union[float, Sequence[float]], name: str = "pixdim_mm") -> float:
    """The side of a square pixel from ``pixdim_mm``: a number, or the bundles' list ``[dy, dx]`` of two equal values.

    Raises:
        ValueError: naming the option: not one or two numbers, not > 0, or two different values
            (what needs this resamples to square pixels only).
    """
    values = list(pixdim_mm) if isinstance(pixdim_mm, (list, tuple)) else [pixdim_mm]
    if not 1 <= len(values) <= 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in values):
        raise ValueError(f"--{name} must be a list [dy, dx] of two equal numbers, got {pixdim_mm!r}")
    if not all(v > 0 for v in values):
        raise ValueError(f"--{name} must be > 0, got {pixdim_mm!r}")
    if abs(float(values[0]) - float(values[-1])) > 1e-6 * max(abs(float(v)) for v in values):
        raise ValueError(f"--{name} must be two equal values [d, d] (square pixels), got {pixdim_mm!r}")
    return float(values[0])


def retired_option_problems(names: Sequence[str]) -> List[str]:
    """One message per retired name among ``names`` (:data:`RETIRED_OPTIONS`), naming the option to use."""
    problems = []
    for name in names:
        if name in RETIRED_OPTIONS:
            note = _RETIRED_VALUE_NOTES.get(name)
            problems.append(f"--{name} is not an option of this bundle; use --{RETIRED_OPTIONS[name]}"
                            + (f" ({note})" if note else ""))
    return problems


def _running_config() -> Mapping:
    """The config of the ``monai.bundle.ConfigParser`` evaluating the caller (its overrides included), or ``{}``.

    A bundle config's ``$`` expression sees only the items it references; the parser that
    evaluates it (``ConfigWorkflow.initialize`` -> ``ConfigParser.get_parsed_content``) is on the
    call stack, and its config holds every top-level key, those the command line added too.
    """
    from monai.bundle import ConfigParser

    frame = sys._getframe(1)
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, ConfigParser):
                config = owner.get()
                return config if isinstance(config, Mapping) else {}
            frame = frame.f_back
    finally:
        del frame
    # Not under a ConfigParser (a future MONAI, another runner): the check is a courtesy to a
    # user's typo and must never stop a run that is otherwise right.
    logger.debug("refuse_retired_options: no ConfigParser on the call stack; retired names not checked")
    return {}


def refuse_retired_options(config: Optional[Mapping] = None) -> None:
    """Refuse a retired option name or a synonym (:data:`RETIRED_OPTIONS`) among the top-level keys of a config.

    ``python -m monai.bundle run ... --epochs 3`` adds a top-level key ``epochs`` to the config,
    which nothing refers to: the run would go on with the default ``max_epochs``. Each bundle
    config calls this (no argument: the running config, command-line overrides included)
    first in ``initialize``, after :func:`cmrssl.cli_errors.install`.

    Args:
        config: the config to look at; ``None``: the config being evaluated (:func:`_running_config`).

    Raises:
        ValueError: ``bad option: --epochs is not an option of this bundle; use --max_epochs``,
            one per retired name.
    """
    if config is None:
        config = _running_config()
    problems = retired_option_problems([str(key) for key in config])
    if problems:
        raise ValueError("bad option" + ("s" if len(problems) > 1 else "") + ": " + "; ".join(problems))
