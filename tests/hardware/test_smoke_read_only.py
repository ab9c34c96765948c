"""The read-only hardware smoke suite: ``pytest tests/hardware --hw-config FILE`` (docs/HARDWARE.md).

For the station of FILE: every instrument identifies as a model its driver speaks; every SCPI instrument's
error queue is read (and shown); the drivers whose connection only reads (the N77xx lasers, attenuators and
meters: ``*CLS`` and ``<query> MIN|MAX``; the amplifier profile: ``*IDN?`` and ``*CLS``) connect and report the
limits they read. Nothing is set and no light is switched on: no laser, AWG, amplifier or bias command is sent.
As PyMeasure's ``*_with_device`` tests, these are deselected without the option (see the repository's
conftest.py), never skipped to green.
"""

from __future__ import annotations

import re
from importlib import import_module

import pytest

from qslab.sequences.instrument_probe import load_station, probe_station, visa_backend_problem

pytestmark = pytest.mark.hardware

# drivers whose constructor only reads (besides *CLS, which empties the error queue read just before)
READ_ONLY_CONNECT = {"keysight_n7711a", "keysight_n7714a", "keysight_n7762a", "keysight_n7764a", "keysight_n7744a",
                     "keysight_n7745a", "scpi_optical_amplifier"}
SCPI_ERROR_QUERY = {"thorlabs_mbx": None, "keysight_infiniium": ":SYST:ERR?"}  # default SYST:ERR?; None: not SCPI
# <code>,"<text>" (SCPI); the Infiniium's :SYST:ERR? answers the code alone (its NUMBer form, the default)
_ERROR_REPLY = re.compile(r'^\s*([+-]?\d+)\s*(?:,\s*"?(.*?)"?)?\s*$')


@pytest.fixture(scope="module")
def station(request):
    return load_station(request.config.getoption("--hw-config"))


def test_every_instrument_identifies_as_its_drivers_model(station):
    rows = probe_station(station)
    problems = [f"{row.name} at {row.address}: {row.problem}" for row in rows if row.problem is not None]
    assert not problems, "\n".join(problems)
    print("\n".join(f"{row.name}: {','.join(row.identity.values())}" for row in rows))


def test_every_scpi_error_queue_reads(station):
    import pyvisa

    queues = {}
    for name, instrument in station.instruments.items():
        query = SCPI_ERROR_QUERY.get(instrument.driver, "SYST:ERR?")
        if instrument.spec.transport != "visa" or query is None:
            continue
        library = station.settings.visa_library
        assert visa_backend_problem(instrument.address, library) is None, name
        resource = pyvisa.ResourceManager(library).open_resource(
            instrument.address, read_termination="\n", write_termination="\n",
            timeout=int(1000 * instrument.init.get("timeout_s", station.settings.timeout_s)))
        try:
            entries = []
            for _ in range(32):  # the N77xx queue holds 30
                reply = resource.query(query)
                match = _ERROR_REPLY.match(reply)
                assert match is not None, f"{name}: {query} answered {reply!r}"
                if int(match.group(1)) == 0:
                    break
                entries.append(reply.strip())
            queues[name] = entries
        finally:
            resource.close()
    print("\n".join(f"{name}: {entries or 'empty'}" for name, entries in queues.items()))
    assert queues, "no SCPI instrument in the station"


def test_read_only_drivers_connect_and_read_their_limits(station):
    limits = {}
    for name, instrument in station.instruments.items():
        if instrument.driver not in READ_ONLY_CONNECT:
            continue
        module, _, cls = instrument.spec.import_path.rpartition(".")
        driver = getattr(import_module(module), cls)(
            f"hw_smoke_{name}", instrument.address, visalib=station.settings.visa_library,
            timeout=instrument.init.get("timeout_s", station.settings.timeout_s))
        try:
            limits[name] = {parameter.full_name: (parameter.vals.min_value, parameter.vals.max_value)
                            for parameter in _limited(driver)}
            assert limits[name] or instrument.driver == "scpi_optical_amplifier", name
        finally:
            driver.close()
    print("\n".join(f"{name}: {values}" for name, values in limits.items()))
    assert limits, "no instrument with a read-only connection in the station"


def _limited(module):
    """Parameters with a numeric range (those the N77xx drivers read with MIN|MAX at connect)."""
    for parameter in module.parameters.values():
        if hasattr(parameter.vals, "min_value") and parameter.name != "timeout":
            yield parameter
    for submodule in module.submodules.values():
        if hasattr(submodule, "parameters") and not isinstance(submodule, tuple) and submodule.__class__.__name__ != "ChannelTuple":
            yield from _limited(submodule)
