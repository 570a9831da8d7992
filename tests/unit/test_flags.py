"""Yes/no options as they come from a bundle command line."""

from __future__ import annotations

import pytest

from cmrssl.flags import as_bool


@pytest.mark.parametrize("value, expected", [(True, True), ("true", True), ("Yes", True), (1, True), ("1", True),
                                             (False, False), ("false", False), ("no", False), ("", False), (0, False)])
def test_command_line_flags(value, expected):
    assert as_bool(value, "overwrite") is expected


def test_command_line_flag_typo_is_refused_by_name():
    with pytest.raises(ValueError, match="use_tensorboard must be true or false, got 'flase'"):
        as_bool("flase", "use_tensorboard")
