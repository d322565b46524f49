"""What the figure tests read back from a drawn matplotlib figure."""

from __future__ import annotations

from matplotlib.axes import Axes


def legend_texts(ax: Axes) -> list[str]:
    """The entries of ``ax``'s legend, in order (the legend must exist)."""
    legend = ax.get_legend()
    assert legend is not None, "the axes has no legend"
    return [t.get_text() for t in legend.get_texts()]
