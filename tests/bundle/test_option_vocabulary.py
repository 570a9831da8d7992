"""One option vocabulary across the five bundles (docs/options.md, ``cmrssl.flags.OPTIONS``): no bundle config
uses a retired name or a synonym (``cmrssl.flags.RETIRED_OPTIONS``), a shared option has one type everywhere, and
a retired name given on the command line is refused first in ``initialize``, naming the option to use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmrssl.cli_errors import root_cause
from cmrssl.flags import OPTIONS, RETIRED_OPTIONS, check_options, refuse_retired_options, square_pixdim_mm

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p for p in (REPO_ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
CONFIGS = sorted(p for b in BUNDLES for p in (b / "configs").glob("*.json") if p.name != "metadata.json")
#: configs that run alone; every other config is an overlay on its bundle's train.json
STANDALONE = {"train.json", "inference.json", "ensemble.json"}


def _name(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.name}"


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _option_rules(config: dict) -> dict:
    """``{option: rule}`` of a config, its ``option_rules`` and ``option_rules#name`` overlay entries."""
    rules = {name: entry[1] for name, entry in config.get("option_rules", {}).items()}
    rules.update({key.split("#", 1)[1]: entry[1] for key, entry in config.items() if key.startswith("option_rules#")})
    return rules


def _is_expression(value) -> bool:
    return isinstance(value, str) and value.startswith("$")


def test_every_bundle_is_checked():
    assert {b.name for b in BUNDLES} == {"cmr_unet_segmentation", "cmr_ssp_pretraining", "cmr_position_ssl",
                                         "cmr_ranking_ssl", "cmr_lvquan_ensemble"}
    assert set(RETIRED_OPTIONS.values()) <= set(OPTIONS)
    assert not set(RETIRED_OPTIONS) & set(OPTIONS)


@pytest.mark.parametrize("path", CONFIGS, ids=_name)
def test_no_config_uses_a_retired_name_or_a_synonym(path):
    """A synonym (``epochs`` beside ``max_epochs``) splits the vocabulary: a command line that works for one bundle
    is refused by the next. Top-level ids, ``a#b`` overlay ids and option rules are all checked."""
    config = _load(path)
    names = {key.lstrip("+").split("#")[0] for key in config} | set(_option_rules(config))
    used = sorted(names & set(RETIRED_OPTIONS))
    assert not used, [f"{n}: use {RETIRED_OPTIONS[n]}" for n in used]


# the JSON type each shared option has where a config writes it literally (not as a $ expression)
_LITERAL_TYPES = {"max_epochs": (int,), "epoch_length": (int, type(None)), "num_workers": (int,), "seed": (int,),
                  "datalist": (str,), "dataset_dir": (str,), "output_dir": (str,), "checkpoint": (str,),
                  "overwrite": (bool,), "resume": (bool,), "device": (str,), "spacing_from": (str,)}


@pytest.mark.parametrize("path", CONFIGS, ids=_name)
def test_shared_options_have_one_type_everywhere(path):
    """``pixdim_mm`` is a list ``[dy, dx]`` in every bundle (the ranking bundle had one number); the others have
    the type of ``cmrssl.flags.OPTIONS`` and, where a config checks them, exactly its rule."""
    assert set(_LITERAL_TYPES) | {"pixdim_mm"} == set(OPTIONS)
    config = _load(path)
    for name in set(OPTIONS) & set(config):
        value = config[name]
        if _is_expression(value):
            continue
        if name == "pixdim_mm":
            assert isinstance(value, list) and len(value) == 2, (name, value)
            assert all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value), value
        else:
            assert isinstance(value, _LITERAL_TYPES[name]) and not (
                bool not in _LITERAL_TYPES[name] and isinstance(value, bool)), (name, value)
        check_options({name: [value, OPTIONS[name]]})  # the default passes the shared rule
    for name, rule in _option_rules(config).items():
        if name in OPTIONS:
            assert rule == OPTIONS[name], f"{name}: rule {rule!r}, the vocabulary's is {OPTIONS[name]!r}"


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name in STANDALONE], ids=_name)
def test_standalone_configs_check_the_shared_options_they_define(path):
    """A number, flag or list given on the command line is checked before any data is read, in every bundle."""
    config = _load(path)
    rules = _option_rules(config)
    unchecked = sorted(name for name in set(OPTIONS) & set(config)
                       if OPTIONS[name] != "str" and not _is_expression(config[name]) and name not in rules)
    assert not unchecked, unchecked


@pytest.mark.parametrize("path", [p for p in CONFIGS if "initialize" in _load(p)], ids=_name)
def test_every_initialize_refuses_retired_names_first(path):
    """Right after the error reporter: before the option check, any data, any output."""
    initialize = _load(path)["initialize"]
    assert initialize[:2] == ["$cmrssl.cli_errors.install()", "$cmrssl.flags.refuse_retired_options()"], initialize


@pytest.mark.parametrize("path", [p for p in CONFIGS if "initialize" in _load(p)], ids=_name)
def test_a_retired_name_added_to_a_config_is_refused_with_the_new_name(path):
    """In-process, as ``monai.bundle`` evaluates it: the running parser's config, overrides included."""
    from monai.bundle import ConfigParser

    files = [path] if path.name in STANDALONE else [path.parent / "train.json", path]
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.get_parsed_content("initialize#1")  # nothing retired: passes
    parser.update({"epochs": 3, "out_dir": "x"})
    with pytest.raises(Exception) as raised:
        parser.get_parsed_content("initialize#1", lazy=False)
    error = root_cause(raised.value)
    assert isinstance(error, ValueError)
    assert str(error) == ("bad options: --epochs is not an option of this bundle; use --max_epochs; "
                          "--out_dir is not an option of this bundle; use --output_dir")


def test_refusal_names_how_the_value_changed():
    with pytest.raises(ValueError) as raised:
        refuse_retired_options({"model_dir": "runs/fold0", "max_epochs": 3})
    assert str(raised.value) == ("bad option: --model_dir is not an option of this bundle; use --checkpoint (the model "
                                 "file, e.g. runs/fold0/model.pt; its index_scale.json is read beside it)")
    refuse_retired_options({"max_epochs": 3, "pixdim_mm": [1.0, 1.0]})
    refuse_retired_options()  # outside a bundle config there is nothing to check: never an error


def test_pixdim_mm_rule_wants_a_list_of_two():
    check_options({"pixdim_mm": [[1.5, 1.5], "float>0[2]"]})
    for value, message in ((1.5, "--pixdim_mm must be a list of 2 numbers, got 1.5"),
                           ([1.5], "--pixdim_mm must be a list of 2 numbers, got [1.5]"),
                           ([1.5, -1.0], "--pixdim_mm must be > 0, got -1.0"),
                           ([1.5, "a"], "--pixdim_mm must be a number, got 'a'")):
        with pytest.raises(ValueError) as raised:
            check_options({"pixdim_mm": [value, "float>0[2]"]})
        assert str(raised.value) == f"bad option: {message}"


def test_square_pixel_bundles_take_the_list_and_refuse_two_sizes(tmp_path):
    """The ranking and LVQuan bundles resample to square pixels: ``[d, d]`` (or one number from Python)."""
    from cmrssl.engines.study_volumes import StudyVolumeWriter
    from cmrssl.transforms.ranking import LoadStudyStack

    assert square_pixdim_mm([1.5, 1.5]) == square_pixdim_mm(1.5) == 1.5
    assert LoadStudyStack(pixdim_mm=[2.0, 2.0]).pixdim_mm == 2.0
    assert StudyVolumeWriter(tmp_path / "out", plots=False, pixdim_mm=[2.0, 2.0]).pixdim_mm == 2.0
    with pytest.raises(ValueError, match=r"^--pixdim_mm must be two equal values \[d, d\] \(square pixels\), "
                                         r"got \[1.5, 2.0\]$"):
        LoadStudyStack(pixdim_mm=[1.5, 2.0])
    for bad in ([1.5, 1.5, 1.5], "1.5", [0.0, 0.0]):
        with pytest.raises(ValueError, match="^--pixdim_mm must be"):
            square_pixdim_mm(bad)


def test_an_old_name_on_the_command_line_is_refused_before_any_work(tmp_path):
    """``--epochs`` (cmr_ssp_pretraining < 0.3.0) was added to the config and ignored: 100 epochs ran. Now the run
    stops in ``initialize``, before the datalist is read (it does not exist) or anything is written."""
    bundle = REPO_ROOT / "bundles" / "cmr_ssp_pretraining"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               "['configs/train.json','configs/mim.json']", "--bundle_root", str(tmp_path),
               "--datalist", str(tmp_path / "missing" / "datalist.json"), "--epochs", "1"]
    result = subprocess.run(command, cwd=str(bundle), capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr[-3000:]
    assert lines[-1] == ("error: ValueError: bad option: --epochs is not an option of this bundle; "
                         "use --max_epochs")
    assert "Epoch[" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []
