"""Recompute a lab session's results from its HDF5 file alone, through the same analysis code as the live session.

Without options the numbers equal the live session's exactly (same JSON keys). --calibration ID
takes what another calibration record measured (by its kind: photons -> mu; amplifier -> G and its
noise figure; homodyne of the server receiver -> the server detector; channel -> the honest link,
T with the pilots' sqrt(eta_s T) and eps; processor -> its loss per pass, for the data-leakage bound) in place of the session's values (MeasuredValues), and
--failure-probability or --untrusted-detector change the bound; the result then says what changed
("changes").
"""

from __future__ import annotations


HELP = "recompute a session's results from its file (optionally with another calibration or bound)"


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import number
    from qslab.sequences.config import FAILURE_PROBABILITY

    parser.add_argument("file", metavar="FILE", help="a session file written by `qslab session`")
    parser.add_argument("--calibration", metavar="ID", action="append", default=[],
                        help="a calibration record id to use instead of the recorded one (repeatable)")
    parser.add_argument("--calibration-dir", metavar="DIR", default=None,
                        help="where the records are (default: $QSLAB_CALIBRATION_DIR or qslab-output/calibration)")
    parser.add_argument("--failure-probability", type=number("failure-probability", FAILURE_PROBABILITY.minimum,
                                                             0.5, max_open=True, unit="probability"), default=None,
                        help="failure probability of the verification's finite-size limits (default: the session's)")
    parser.add_argument("--untrusted-detector", action="store_true",
                        help="charge the server detector's loss and electronic noise to the client (docs/PHYSICS.md 13)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")


def override_from_record(record) -> dict:
    """The session's calibrated values this record replaces (analysis.replay_result.measured_from_record)."""
    from qslab.analysis.replay_result import measured_from_record

    return measured_from_record(record)


def run(args) -> int:
    from qslab.analysis.recording import RecordingError
    from qslab.analysis.replay import replay
    from qslab.calibration.records import RecordError, RecordStore
    from qslab.sequences.commands.cli_io import UsageError, print_json_last
    from qslab.sequences.station_calibration import check_plausible

    override = {}
    store = RecordStore(args.calibration_dir)
    try:
        for record_id in args.calibration:
            record = store.get(record_id)
            check_plausible(record)
            override.update(override_from_record(record))
        result = replay(args.file, override, args.failure_probability, trusted=not args.untrusted_detector)
    except (RecordingError, RecordError, ValueError) as error:
        raise UsageError(str(error)) from None
    from qslab.sequences.commands.session import format_result

    print(format_result(result))
    for key, change in result["changes"].items():
        print(f"changed: {key}: {change['recorded']} -> {change['replayed']}")
    if not result["changes"]:
        print("no change: the recorded results are reproduced exactly")
    if args.json:
        print_json_last(result)
    return 0
