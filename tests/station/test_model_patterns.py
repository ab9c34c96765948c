"""Identification (issue 15, item 8): the registry's *IDN? model patterns accept the current models of each family
and refuse other instruments."""

from __future__ import annotations

import re

import pytest

from qslab.sequences.config import DRIVERS


@pytest.mark.parametrize(("driver", "model"), [
    ("keysight_n7744a", "N7744A"), ("keysight_n7744a", "N7744C"), ("keysight_n7745a", "N7745C"),
    ("keysight_infiniium", "DSOS804A"), ("keysight_infiniium", "MXR608A"), ("keysight_infiniium", "EXR208A"),
    ("keysight_infiniium", "UXR1104A"), ("scpi_optical_amplifier", "SCPI optical amplifier (simulated)"),
])
def test_current_models_are_accepted(driver, model):
    assert re.fullmatch(DRIVERS[driver].model_pattern, model)


@pytest.mark.parametrize(("driver", "model"), [
    ("keysight_n7744a", "N7745C"), ("keysight_n7744a", "N7744B"), ("keysight_infiniium", "N7744C"),
    ("scpi_optical_amplifier", "N7744A"), ("scpi_optical_amplifier", "EDFA-100"),
])
def test_other_instruments_are_refused(driver, model):
    assert re.fullmatch(DRIVERS[driver].model_pattern, model) is None
