"""The station configs shipped inside the package: what `qslab init` writes and what a command uses with no file.

The documented examples live next to this module, so an installed qslab carries them and ``qslab
session`` works in any directory; the repository's top-level ``lab_config.toml`` and
``lab_config.hardware.toml`` are links to them (one source).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from qslab.sequences.config import DEFAULT_CONFIG_PATH, LabConfig, load_config, loads_config

# template name -> packaged file
TEMPLATES = {"bench": "lab_config.toml", "hardware": "lab_config.hardware.toml"}
PACKAGED_SOURCE = "qslab's packaged lab_config.toml (virtual bench)"


def template_text(template: str = "bench") -> str:
    """The packaged, commented config: ``bench`` (every instrument on the virtual bench) or ``hardware``."""
    return files("qslab.sequences").joinpath(TEMPLATES[template]).read_text(encoding="utf-8")


def write_starter(directory: str | Path = ".", template: str = "bench") -> Path:
    """Write ``lab_config.toml`` into ``directory`` (made if missing); an existing file is never overwritten."""
    path = Path(directory) / DEFAULT_CONFIG_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8") as handle:  # "x": FileExistsError instead of overwriting
        handle.write(template_text(template))
    return path


def load_station_config(path: str | Path | None) -> tuple[LabConfig, bool]:
    """The config a command runs on: ``path``; with none, ./lab_config.toml, else the packaged bench config.

    Returns (config, packaged): packaged is True when no file was found and the shipped bench config is used.
    """
    if path is not None or Path(DEFAULT_CONFIG_PATH).exists():
        return load_config(path if path is not None else DEFAULT_CONFIG_PATH), False
    return loads_config(template_text("bench"), PACKAGED_SOURCE), True
