"""qslab: lab automation for quantum-secure multiparty deep learning.

The four rooms live at the top of the repository and install as subpackages of this one:
``qslab.instruments`` (drivers, roles, virtual bench), ``qslab.calibration`` (procedures and
records), ``qslab.sequences`` (station, protocol, session, CLI) and ``qslab.analysis`` (pure
computation). See docs/ARCHITECTURE.md.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qslab")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
