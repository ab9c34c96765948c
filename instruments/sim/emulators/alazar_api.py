"""The ATS-SDK as the qcodes Alazar driver calls it, answered by a board on the embedded bench (alazar_ats.py).

The driver's side of the in-process card: ``AlazarDigitizer.connect_driver`` builds the qcodes driver with
``api=SimulatedAtsApi(address)`` for an address the bench handed out. Apart from the board so that the bench (which
serves sockets and never calls this) does not import qcodes.
"""

from __future__ import annotations

import ctypes
from typing import Any

from qcodes.instrument_drivers.AlazarTech.ats_api import AlazarATSAPI
from qcodes.instrument_drivers.AlazarTech.constants import API_SUCCESS, Capability
from qcodes.instrument_drivers.AlazarTech.utils import TraceParameter
from qcodes.parameters import ParameterBase

from qslab.instruments.sim.emulators.alazar_ats import BITS_PER_SAMPLE, BOARD_MODEL, board_at


def _raw(argument: Any) -> Any:
    """What the DLL receives for an argument: a parameter's raw value, a ctypes pointer's address."""
    if isinstance(argument, ParameterBase):
        return argument.raw_value
    if isinstance(argument, ctypes.c_void_p):
        return argument.value
    return argument


class SimulatedAtsApi(AlazarATSAPI):
    """The ATS-SDK answered by a bench board instead of ATSApi.dll (module docstring).

    Built as ``SimulatedAtsApi(address)``: the wrapper's metaclass keeps one API object per library path, and the
    address is this library's path. ``WrappedDll.__init__`` (which loads the DLL) is not called: there is none.
    """

    def __init__(self, dll_path: str):
        board = board_at(dll_path)
        if board is None:
            raise ValueError(f"{dll_path!r}: no simulated Alazar board at this address (expected one the embedded "
                             "bench handed out)")
        self.board = board

    def _sync_dll_call(self, c_name: str, *args: Any) -> Any:
        """One ATS-SDK function, answered by the board; TraceParameters passed in are synced, as the DLL path
        marks them after a call (qcodes' dll_wrapper), and a refusal raises as that path raises on an error code."""
        self.board.call(c_name, *(_raw(a) for a in args))
        for argument in args:
            if isinstance(argument, TraceParameter):
                argument._set_updated()
        return API_SUCCESS

    def get_board_by_system_id(self, system_id: int, board_id: int) -> int:
        return self.board.handle if (system_id, board_id) == (1, 1) else 0

    def get_board_model(self, handle: int) -> str:
        return BOARD_MODEL

    def get_channel_info_(self, handle: int) -> tuple[int, int]:
        return 4 * 1024 ** 3, BITS_PER_SAMPLE

    def get_cpld_version_(self, handle: int) -> str:
        return "25.16"

    def get_driver_version_(self) -> str:
        return "7.4.0"

    def get_sdk_version_(self) -> str:
        return "7.4.0"

    def query_capability_(self, handle: int, capability: int) -> int:
        values = {Capability.ASOPC_TYPE: 1763017568, Capability.GET_SERIAL_NUMBER: 970396,
                  Capability.MEMORY_SIZE: 4 * 1024 ** 3, Capability.GET_PCIE_LINK_WIDTH: 8,
                  Capability.GET_PCIE_LINK_SPEED: 2, Capability.GET_LATEST_CAL_DATE: 250117}
        return values.get(Capability(capability), 0)

    def read_register_(self, handle: int, offset: int) -> int:
        return {8: 0x1E040000}.get(offset, 0)  # 8: the firmware version register (30.04)

    def write_register_(self, handle: int, offset: int, value: int) -> None:
        return None

    def busy(self, handle: int) -> int:
        return 0
