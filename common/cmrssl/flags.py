"""Yes/no flags as they arrive from a bundle's command line.

``python -m monai.bundle run ... --overwrite false`` hands the config the
string ``"false"``, which Python treats as true: every boolean option of our
configs goes through :func:`as_bool`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_bool"]


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
