"""What a weights file needs to be reproduced: library and BLAS versions, the git revision, the data's hashes, the seed.

Training is numpy on float32/float64 BLAS: the same seed gives the same weights on one machine, and
another BLAS (or thread count) changes the summation order, so the file records which one ran.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

from qslab.analysis import mnist


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_revision() -> str:
    """HEAD of the source tree, '+dirty' if tracked files changed; 'unknown' outside a checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def blas() -> dict:
    """numpy's build configuration (BLAS/LAPACK names and versions) and the thread settings in effect."""
    info = {"threads_env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    try:
        config = np.show_config(mode="dicts")
        deps = config.get("Build Dependencies", {})
        info.update({name: {k: deps[name].get(k) for k in ("name", "version", "openblas configuration")
                            if k in deps[name]} for name in ("blas", "lapack") if name in deps})
    except (TypeError, AttributeError):  # numpy < 1.26 has no dict mode
        info["numpy_config"] = "unavailable"
    return info


def training_provenance(seed: int, data_dir=None) -> dict:
    """The record stored with trained weights (see the module docstring)."""
    import scipy

    data_dir = Path(data_dir) if data_dir is not None else mnist.default_data_dir()
    hashes = {name: _sha256(data_dir / name) for names in mnist.FILES.values() for name in names
              if (data_dir / name).is_file()}
    return {"seed": int(seed), "numpy": np.__version__, "scipy": scipy.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "platform": platform.platform(),
            "blas": blas(), "git_revision": git_revision(), "mnist_sha256": hashes}
