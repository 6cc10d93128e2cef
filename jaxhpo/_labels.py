"""Parameter labels as text: how ``jaxhpo show``, trials.csv and the plots
write a categorical choice, so that choices whose plain text is the same
(``1`` and ``"1"``, ``None`` and ``"None"``) read apart."""

from __future__ import annotations

import ast
from typing import Any

__all__ = ["INACTIVE_TEXT", "label_text"]

INACTIVE_TEXT = "-"  # what ``jaxhpo show`` prints for an inactive parameter


def label_text(v: Any) -> Any:
    """A parameter value as trials.csv, ``jaxhpo show`` and the plots write it:
    ``None`` as ``None``; a text that would read as something else (an empty
    cell, show's ``-`` for inactive, a quoted text, a Python literal such as
    ``None``, ``1``, ``True`` or ``(1, 2)``, which a label of that value
    writes) or that is not printable on one line, as its repr; anything else
    as it is."""
    if v is None:
        return "None"
    if isinstance(v, str) and (v in ("", INACTIVE_TEXT) or v[:1] in ("'", '"') or not v.isprintable()
                               or _reads_as_literal(v)):
        return repr(v)
    return v


def _reads_as_literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True
