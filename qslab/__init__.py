"""qslab: lab automation for quantum-secure multiparty deep learning.

The four rooms live at the top of the repository and install as subpackages of this one:
``qslab.instruments`` (drivers, roles, virtual bench), ``qslab.calibration`` (procedures and
records), ``qslab.sequences`` (station, protocol, session, CLI) and ``qslab.analysis`` (pure
computation). See docs/ARCHITECTURE.md.

The analyst's API (qslab/api.py) is imported on first use, so ``import qslab`` and the CLI stay
cheap: ``qslab.open_session``, ``qslab.open_calibration``, ``qslab.replay``, ``qslab.ReplayResult``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qslab")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_API = ("Change", "RecordError", "RecordingError", "ReplayResult", "open_calibration", "open_session", "replay")


def __getattr__(name: str):
    """The API's names, from qslab.api on first use (xarray and the analysis load only then)."""
    if name in _API:
        from qslab import api

        return getattr(api, name)
    raise AttributeError(f"module 'qslab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
