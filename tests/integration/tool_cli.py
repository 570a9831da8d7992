"""Run a tool as a user does (``python tools/<tool>.py ...``) and read its refusal.

One copy for the integration tests that check what a refused input prints.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["run_tool", "assert_refused"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_tool(tool: str, *args, timeout: int = 120) -> subprocess.CompletedProcess:
    """``python tools/<tool>.py ARGS`` from the repository root."""
    return subprocess.run([sys.executable, f"tools/{tool}.py", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def assert_refused(proc: subprocess.CompletedProcess, tool: str, code: int, path: Path, *words: str) -> str:
    """Exit ``code``, one clean ``tool: error: <path>: ...`` line naming ``words``; returns the message."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    line = next((ln for ln in proc.stderr.splitlines() if ln.startswith(f"{tool}: error: ")), None)
    assert line is not None, proc.stderr
    message = line[len(f"{tool}: error: "):]
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, message
    return message
