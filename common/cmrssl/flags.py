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
entries to the YAML it is written into.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

__all__ = ["as_bool", "check_options", "check_url", "safe_name", "MAX_NAME_LENGTH", "URL_SCHEMES"]

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


def _check_option(name: str, value: Any, rule: str) -> None:
    """One option against a rule such as ``"int>=1"``, ``"float>0"``, ``"bool"``, ``"int>=1|null"``."""
    rule = rule.replace(" ", "")
    nullable = rule.endswith("|null")
    rule = rule[: -len("|null")] if nullable else rule
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
