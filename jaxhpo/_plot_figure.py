"""What every picture shares: a headless matplotlib ``Figure``, written where asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["NothingToPlot", "figure", "finish"]


class NothingToPlot(ValueError):
    """The study or result holds nothing this plot draws yet (no complete trial,
    no reports, too few trials for importance, every evaluation failed)."""


def figure(**kwargs: Any):
    """A matplotlib ``Figure`` (object API: no window, no global state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'jaxhpo[plot]' (or matplotlib)") from None
    return Figure(**kwargs)


def finish(fig, path: Any) -> Any:
    """Lay ``fig`` out and, given ``path``, write it (PNG by the suffix); returns ``fig``."""
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig
