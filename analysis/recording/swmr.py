"""Reading a file HDF5 marks open for writing (a live writer's, or a killed one's) in SWMR mode, with a bounded number
of metadata read attempts.

Why: an SWMR reader that meets a metadata block whose checksum fails takes the writer to be half-way through writing
it and reads it again, sleeping twice as long before each attempt (1 ns, 2 ns, 4 ns, ...). With HDF5's 100 attempts,
a block that stays torn (its writer killed while the cache wrote it) is read again for ever: in the test suite a
reader of a killed writer's file slept 15 minutes inside one dataset read. READ_ATTEMPTS = 32 waits about 4 s in all
(a live writer's flush takes milliseconds), then HDF5 raises "incorrect metadata checksum after all read attempts",
which every caller turns into one line naming the file.

HDF5's H5Pset_metadata_read_attempts has no h5py binding: it is called through ctypes on the HDF5 library h5py
loaded (found in this process's memory map, or beside an h5py wheel). Where it cannot be found the file is opened
as h5py.File(..., swmr=True) would open it, unbounded (``bounded_attempts()`` says which).
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import h5py

READ_ATTEMPTS = 32  # sleeps of 1 ns doubling: ~4.3 s in all before a torn block is an error


def open_swmr_read(path: str | Path, *, locking: bool | None = None) -> h5py.File:
    """``h5py.File(path, "r", libver="latest", swmr=True)`` (``locking``: h5py's file-locking argument; None: HDF5's
    default), with at most READ_ATTEMPTS reads of a metadata block whose checksum fails."""
    plist = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    plist.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    if locking is not None:
        plist.set_file_locking(bool(locking), False)
    _limit_read_attempts(plist)
    return h5py.File(h5py.h5f.open(os.fsencode(str(path)), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=plist))


def bounded_attempts() -> bool:
    """Whether SWMR reads here stop after READ_ATTEMPTS (HDF5's library found), or retry as HDF5 does by default."""
    return _set_read_attempts() is not None


def _limit_read_attempts(plist) -> None:
    setter = _set_read_attempts()
    if setter is not None and setter(plist.id, READ_ATTEMPTS) < 0:
        raise OSError(f"HDF5 refused {READ_ATTEMPTS} metadata read attempts on a file access property list")


@functools.cache
def _set_read_attempts():
    """HDF5's H5Pset_metadata_read_attempts from the library h5py uses, or None: the first library found whose
    function sets, and reads back, the attempts of a property list h5py made (another HDF5 in the process, e.g. a
    netCDF library's, does not know h5py's identifiers)."""
    probe = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    for library in _hdf5_libraries():
        try:
            loaded = ctypes.CDLL(library)
            setter, getter = loaded.H5Pset_metadata_read_attempts, loaded.H5Pget_metadata_read_attempts
        except (OSError, AttributeError):
            continue
        setter.argtypes, setter.restype = [ctypes.c_int64, ctypes.c_uint], ctypes.c_int
        getter.argtypes, getter.restype = [ctypes.c_int64, ctypes.POINTER(ctypes.c_uint)], ctypes.c_int
        attempts = ctypes.c_uint(0)
        if setter(probe.id, READ_ATTEMPTS) >= 0 and getter(probe.id, ctypes.byref(attempts)) >= 0 \
                and attempts.value == READ_ATTEMPTS:
            return setter
    return None


def _hdf5_libraries() -> list[str]:
    """Paths of the HDF5 libraries this process has loaded (Linux), then those beside h5py's package (its wheels)."""
    found = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip()
                name = os.path.basename(path)
                if name.startswith("libhdf5") and "_hl" not in name and path not in found:
                    found.append(path)
    except OSError:
        pass
    package = Path(h5py.__file__).resolve().parent
    for folder in (package.parent / "h5py.libs", package / ".dylibs"):
        found += [str(path) for path in sorted(folder.glob("libhdf5*")) if "_hl" not in path.name]
    return found
