"""The installer's one error type: a message an operator can act on."""
from __future__ import annotations


class InstallError(Exception):
    """Installation cannot proceed; ``str(exc)`` says why and what to do."""
