"""Output safety helpers: output vs input, safe folder names, overwrite of only the writer's own entries,
training runs that are never mistaken for finished, option checks, the last line of a bundle error."""

from __future__ import annotations

import json
import logging
import os
import socket

import pytest

from cmrssl.cli_errors import _hook, root_cause
from cmrssl.data.subsets import warn_if_not_held_out
from cmrssl.engines.training_run import check_training_run, partial_dir, unfinished_run_note
from cmrssl.flags import check_options
from cmrssl.io.atomic import OutputOverlapsInputError, atomic_folder, check_not_input, safe_folder_name


@pytest.mark.parametrize("name, expected", [
    ("../../escape", "escape"), ("/data/p1", "data_p1"), ("patient001", "patient001"), ("a b/c", "a_b_c"),
    ("..", "subject"), (".hidden", "hidden"), ("x..y", "x_y"), ("", "subject"),
])
def test_safe_folder_name_never_leaves_the_folder(name, expected):
    assert safe_folder_name(name) == expected


def test_output_that_is_or_contains_an_input_is_refused_but_inside_is_fine(tmp_path):
    study = tmp_path / "study"
    (study / "dicom").mkdir(parents=True)
    with pytest.raises(OutputOverlapsInputError, match="the output is the input"):
        check_not_input(study, [study])
    with pytest.raises(OutputOverlapsInputError, match="contains the input"):
        check_not_input(tmp_path, [study / "dicom"])
    link = tmp_path / "link"
    link.symlink_to(study)
    with pytest.raises(OutputOverlapsInputError):
        check_not_input(link, [study])
    check_not_input(study / "function", [study, None, ""])


def test_overwrite_replaces_only_the_writers_entries_and_its_stale_ones(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name, text in (("mine.txt", "user"), ("result.json", "old"), ("stale_result.json", "old run")):
        (out / name).write_text(text)
    with pytest.raises(FileExistsError):
        with atomic_folder(out):
            pass
    with atomic_folder(out, overwrite=True, owned=lambda name: name.endswith("result.json")) as tmp:
        (tmp / "result.json").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "result.json"]
    assert (out / "result.json").read_text() == "new" and (out / "mine.txt").read_text() == "user"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_failed_writer_changes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(out, overwrite=True) as tmp:
            (tmp / "result.json").write_text("half")
            raise RuntimeError("writer died")
    assert (out / "result.json").read_text() == "old"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def _partial_run(checkpoint, **state):
    folder = partial_dir(checkpoint)
    folder.mkdir(parents=True)
    (folder / "last.pt").write_bytes(b"resume state")
    (folder / "run.json").write_text(json.dumps({"status": "running", "saved_epoch": 3, "max_epochs": 10, **state}))


def test_a_stopped_run_is_reported_stopped_and_must_be_resumed_or_discarded(tmp_path):
    checkpoint = tmp_path / "models" / "model.pt"
    check_training_run(checkpoint)  # nothing there
    _partial_run(checkpoint, pid=2 ** 22 + 12345, host=socket.gethostname())  # no such process
    assert "(stopped, last saved after epoch 3 of 10)" in unfinished_run_note(checkpoint)
    with pytest.raises(FileExistsError, match="--resume true"):
        check_training_run(checkpoint)
    check_training_run(checkpoint, resume=True)
    check_training_run(checkpoint, overwrite="true")


def test_a_run_still_running_is_never_started_over(tmp_path):
    checkpoint = tmp_path / "model.pt"
    _partial_run(checkpoint, pid=os.getpid(), host=socket.gethostname())
    for options in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(FileExistsError, match=f"still running as process {os.getpid()}"):
            check_training_run(checkpoint, **options)


def test_options_are_checked_with_every_problem_named():
    check_options({"max_epochs": [3, "int>=1"], "epoch_length": [None, "int>=1|null"], "lr": [1e-3, "float>0"],
                   "overwrite": ["false", "bool"], "mode": ["all", "str"]})
    with pytest.raises(ValueError) as error:
        check_options({"max_epochs": ["abc", "int>=1"], "lr": [0, "float>0"], "amp": ["maybe", "bool"],
                       "epochs": [2.5, "int"], "flag": [True, "int"]})
    message = str(error.value)
    for part in ("--max_epochs must be a whole number, got 'abc'", "--lr must be > 0, got 0", "amp must be true or false",
                 "--epochs must be a whole number, got 2.5", "--flag must be a whole number, got True"):
        assert part in message


@pytest.mark.parametrize("value", ["../../x", "/abs/x", "a/b", "..", ".hidden", "", "x y", "x" * 129, 3])
def test_an_option_that_becomes_a_file_name_must_be_a_plain_name(value):
    check_options({"method_name": ["simclr_v2.1-a", "name"]})
    with pytest.raises(ValueError, match="--method_name must be a plain name .*it becomes a file name"):
        check_options({"method_name": [value, "name"]})
    assert not isinstance(value, str) or safe_folder_name(value) != value  # the rule the subject folders use


def test_the_last_line_of_a_wrapped_error_is_the_original_message(capsys):
    try:
        try:
            raise FileNotFoundError("/data/x.nii.gz: no such file")
        except FileNotFoundError as inner:
            raise RuntimeError("Failed to evaluate ConfigExpression: $f(@x)") from inner
    except RuntimeError as outer:
        assert isinstance(root_cause(outer), FileNotFoundError)
        _hook(lambda *args: None)(type(outer), outer, outer.__traceback__)
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: FileNotFoundError: /data/x.nii.gz: no such file"


def test_the_last_line_is_our_message_naming_the_file_not_the_library_error_it_came_from(tmp_path, capsys):
    from cmrssl.networks.checkpoint import read_state_dict

    bad = tmp_path / "model.pt"
    bad.write_text("not a checkpoint")
    try:
        try:
            read_state_dict(bad)  # ours, raised from torch's error, which names no file
        except ValueError as inner:
            raise RuntimeError("Failed to evaluate ConfigExpression: $f(@x)") from inner
    except RuntimeError as outer:
        _hook(lambda *args: None)(type(outer), outer, outer.__traceback__)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: ValueError: {bad}: not a readable PyTorch checkpoint (")


def test_a_message_of_several_lines_ends_on_one_line(capsys):
    error = ValueError("/data/x.pt: does not fit\n\tsize mismatch for a\n\tsize mismatch for b")
    _hook(lambda *args: None)(ValueError, error, None)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: ValueError: /data/x.pt: does not fit size mismatch for a size mismatch for b")


def test_evaluation_split_sharing_training_subjects_is_named(tmp_path, caplog):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": "a", "subject": "p1"}, {"image": "b", "subject": "p2"}],
                                    "test": [{"image": "c", "subject": "p2"}, {"image": "d", "subject": "p3"}]}))
    with caplog.at_level(logging.WARNING):
        assert warn_if_not_held_out(datalist, "test") == ["p2"]
    assert "p2" in caplog.text and "not held-out" in caplog.text
