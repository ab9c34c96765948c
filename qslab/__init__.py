"""qslab: lab automation for quantum-secure multiparty deep learning.

The four rooms live at the top of the repository and install as subpackages of this one:
``qslab.instruments`` (drivers, roles, virtual bench), ``qslab.calibration`` (procedures and
records), ``qslab.sequences`` (station, protocol, session, CLI) and ``qslab.analysis`` (pure
computation). See docs/ARCHITECTURE.md.

The analyst's API (qslab/api.py) is imported on first use, so ``import qslab`` and the CLI stay
cheap: ``qslab.open_session``, ``qslab.open_calibration``, ``qslab.replay``, ``qslab.ReplayResult``.
"""

_API = ("Change", "RecordError", "RecordingError", "ReplayResult", "open_calibration", "open_session", "replay")


def _installed_version() -> str:
    """The installed distribution's version (importlib.metadata costs ~0.1 s: looked up on first use only)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qslab")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str):
    """``__version__`` and the API's names, on first use (xarray and the analysis load only then)."""
    if name == "__version__":
        globals()["__version__"] = _installed_version()
        return globals()["__version__"]
    if name in _API:
        from qslab import api

        return getattr(api, name)
    raise AttributeError(f"module 'qslab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "__version__", *_API})
