"""What every figure qslab writes must satisfy (issue 16, section 5): each line and contour named, no label cut.

A line is named when its label is in its axes' legend, or when it is the only line of its axes and the
y axis says what it is. Dashed and dotted lines must be in a legend (a reader cannot guess what a dashed
line marks). Contour lines are named by inline labels that lie inside the axes and do not overlap, or by
one legend entry per level. ``record_figures`` collects every figure saved while a command runs.
"""

from __future__ import annotations

import contextlib

import matplotlib

matplotlib.use("Agg")
from matplotlib.contour import ContourSet  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


@contextlib.contextmanager
def record_figures(monkeypatch):
    """[(path, problems)] of every figure saved inside the block (checked right after it is drawn)."""
    saved = []
    original = Figure.savefig

    def savefig(figure, path, *args, **kwargs):
        original(figure, path, *args, **kwargs)
        saved.append((str(path), figure_problems(figure)))

    monkeypatch.setattr(Figure, "savefig", savefig)
    yield saved


def figure_problems(figure: Figure) -> list[str]:
    renderer = figure.canvas.get_renderer()
    problems = []
    for index, axes in enumerate(figure.axes):
        if _is_colorbar(axes):
            continue
        where = f"axes {index} ({axes.get_title() or axes.get_ylabel()!r})"
        legend = axes.get_legend()
        named = {text.get_text() for text in legend.get_texts()} if legend is not None else set()
        in_containers = {id(artist) for container in axes.containers if container.get_label() in named
                         for artist in _flat(container)}  # an errorbar is named by its container's legend entry
        lines = [line for line in axes.get_lines() if line.get_visible() and len(line.get_xdata()) > 0]
        in_any_container = {id(artist) for container in axes.containers for artist in _flat(container)}
        data_lines = [line for line in lines if id(line) not in in_containers
                      and not (id(line) in in_any_container and not _is_data_line(line))]
        for line in data_lines:
            label = line.get_label()
            dashed = line.get_linestyle() not in ("-", "solid", "None", "none", " ", "")
            if label in named:
                continue
            if not dashed and len(data_lines) == 1 and axes.get_ylabel():
                continue
            problems.append(f"{where}: a {'dashed or dotted ' if dashed else ''}line ({label!r}, "
                            f"{line.get_linestyle()}) is in no legend")
        for contour in (c for c in axes.collections if isinstance(c, ContourSet) and not c.filled):
            problems += _contour_problems(contour, axes, named, renderer, where)
    return problems


def _flat(container):
    for item in container:
        if isinstance(item, (tuple, list)):
            yield from _flat(item)
        elif item is not None:
            yield item


def _is_colorbar(axes) -> bool:
    return hasattr(axes, "_colorbar") or axes.get_label() == "<colorbar>"


def _is_data_line(line) -> bool:
    """Within an errorbar: its data line, not its caps (markers only)."""
    return line.get_linestyle() not in ("None", "none", " ", "") or line.get_marker() not in ("_", "|")


def _contour_problems(contour, axes, named: set[str], renderer, where: str) -> list[str]:
    labels = [text for text in getattr(contour, "labelTexts", []) if text.get_visible()]
    if labels:
        problems = []
        box = axes.get_window_extent(renderer)
        extents = [text.get_window_extent(renderer) for text in labels]
        for text, extent in zip(labels, extents):
            if extent.x0 < box.x0 or extent.x1 > box.x1 or extent.y0 < box.y0 or extent.y1 > box.y1:
                problems.append(f"{where}: contour label {text.get_text()!r} is cut at the edge")
        for i, a in enumerate(extents):
            for j in range(i + 1, len(extents)):
                if a.overlaps(extents[j]):
                    problems.append(f"{where}: contour labels {labels[i].get_text()!r} and {labels[j].get_text()!r} "
                                    "overlap")
        return problems
    drawn = [level for level, segments in zip(contour.levels, contour.allsegs) if any(len(s) for s in segments)]
    return [f"{where}: contour level {level:g} is neither labelled nor in the legend" for level in drawn
            if not any(f"{level:g}" in text for text in named)]
