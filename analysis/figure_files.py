"""A figure laid out and written to its PNG file: the one place the figures' layout and file settings are made.

Why not ``tight_layout(); savefig()``: tight_layout leaves a placeholder layout engine on the figure, and savefig
then lays the whole figure out again in a draw of its own before the draw that renders it, about a sixth of a
figure's CPU (the figure worker draws two figures at every session and fourteen at a full calibration). Taken
off once the margins are set, the pixels written are the same. zlib level 1 instead of PNG's usual 6: the file
is about a tenth larger, and encoding it costs a fraction.
"""

from __future__ import annotations

from pathlib import Path

PNG_COMPRESS_LEVEL = 1


def save_tight(figure, path, dpi: int = 100) -> Path:
    """``figure`` with tight margins, written to ``path`` (PNG) at ``dpi``; returns the path."""
    figure.tight_layout()
    figure.set_layout_engine(None)  # the margins are set; a placeholder engine would lay the figure out once more
    path = Path(path)
    figure.savefig(path, dpi=dpi, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return path
