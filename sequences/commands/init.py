"""Write a commented lab_config.toml to start from (the virtual bench's, or --hardware for real addresses).

Every key is documented where it stands; edit it, then `qslab instruments` identifies and lists the station.
An existing lab_config.toml is never overwritten.
"""

from __future__ import annotations

HELP = "write a commented lab_config.toml to start from (never overwrites one)"


def register(parser) -> None:
    parser.add_argument("directory", metavar="DIR", nargs="?", default=".",
                        help="where to write lab_config.toml (default: the current directory; made if missing)")
    parser.add_argument("--hardware", action="store_true",
                        help="the station on example hardware addresses (192.168.1.x) instead of the virtual bench")


def run(args) -> int:
    from qslab.sequences.commands.cli_io import UsageError
    from qslab.sequences.starter_config import write_starter

    try:
        path = write_starter(args.directory, "hardware" if args.hardware else "bench")
    except FileExistsError as error:
        raise UsageError(f"{error.filename} exists: not overwritten (remove or rename it first)") from None
    except OSError as error:
        raise UsageError(f"cannot write lab_config.toml in {args.directory} ({error.strerror or error})") from None
    where = "the virtual bench" if not args.hardware else "example hardware addresses: put your instruments' in"
    print(f"wrote {path} ({where}); next: `qslab instruments`, then `qslab session`")
    return 0
