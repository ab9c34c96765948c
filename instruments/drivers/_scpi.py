"""Pieces every SCPI driver here shares: the instrument errors, error-queue checking, parsers, and
bounded retries of idempotent queries.

Why the check lives in ``write_raw`` rather than in each set_cmd: qcodes routes every Parameter
set and every ``instrument.write`` through ``write_raw``, so checking ``SYST:ERR?`` there covers
all commands, including the ones a user sends by hand.

Retry policy (README "Retries"): a query (``ask``, a Parameter get, ``SYST:ERR?``) that gets no
reply, loses its connection, or comes back unreadable is asked again, ``QUERY_ATTEMPTS`` times in
all, pausing ``RETRY_BACKOFF_S`` and clearing the line before each retry: a raw socket is reopened
(a late or partial reply goes with the old connection), any other session (GPIB, USBTMC, HiSLIP,
VXI-11, serial) gets a device clear, because there a late reply waits in the instrument's output
queue and would be read as the next answer. The error queue is never probed while a query may
still be answered: the line is cleared first. Every retry is logged at WARNING and told to the retry observers
(``retry_events``). After the last attempt one
:class:`InstrumentFault` names the instrument, its address, the command and what happened, and
nothing more is sent. Writes are never repeated: they change state, and a write that may or may
not have arrived raises InstrumentFault at once. Why a whole Parameter get is retried, not just
its ``ask``: qcodes applies the parser after ``ask_raw`` returns, so only the get can tell that
a reply was garbled. ``RetriedGets`` therefore builds each Parameter with a callable ``get_cmd``
(qcodes' own extension point) that asks and reads the reply inside the retries; asks and gets
nested in a retried get run once and let it retry.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import pyvisa
from qcodes.instrument import ChannelTuple, VisaInstrument
from qcodes.parameters import Parameter, invert_val_mapping

from qslab.instruments.drivers import visa_connection
from qslab.instruments.drivers.retry_events import ConnectionReopened, QueryRetried, notify
from qslab.instruments.drivers.visa_connection import socket_closed

log = logging.getLogger(__name__)
T = TypeVar("T")

# SCPI error-queue reply: <int>,"<text>" (docs/INSTRUMENTS.md 1.2); some firmware omits the quotes.
_ERROR_REPLY = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')
# The N77xx queue is 30 deep (docs/INSTRUMENTS.md 1.2); never loop forever on a broken reply.
_MAX_ERRORS_READ = 32
# Retries of idempotent queries: attempts in all, and the pause before retry 1, 2, ... (the last repeats).
QUERY_ATTEMPTS = 3
RETRY_BACKOFF_S = (0.05, 0.1, 0.2)
# What a get parser raises on a reply it cannot read (float("x#"), a val_mapping miss, ...).
_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, ArithmeticError)
# What a query that makes the instrument work (averaging, settling) may take beyond that work: the work
# times this factor, plus the connection's ordinary timeout (docs/HARDWARE.md "Time").
WORK_TIMEOUT_FACTOR = 1.25
# IEEE 488.2 Standard Event Status Register bit 7: the instrument was switched on since *ESR? was read.
ESR_POWER_ON = 128


def _with_context(args: tuple[Any, ...], *, skip: str | None = None) -> str:
    # qcodes appends its context ("writing ... to ...", "getting ...") to an exception's args
    message, *context = args
    context = [c for c in map(str, context) if skip is None or not c.startswith(skip)]
    return f"{message} ({'; '.join(context)})" if context else str(message)


class InstrumentError(RuntimeError):
    """An instrument refused a command: names the instrument, the command, the code and text."""

    def __init__(self, instrument: str, command: str, errors: list[tuple[int | None, str]]):
        self.instrument = instrument
        self.command = command
        self.errors = errors
        self.code, self.text = errors[0]
        shown = "; ".join(f"{c},\"{t}\"" if c is not None else t for c, t in errors)
        super().__init__(f"{instrument}: {command!r} was refused: {shown}")

    def __str__(self) -> str:
        return _with_context(self.args)


class InstrumentFault(RuntimeError):
    """An instrument did not answer usably (no reply, connection closed, unreadable reply).

    ``what`` says what happened; ``attempts`` how often the command was sent. Nothing was sent to
    the instrument after that: it was left as is (a session decides whether to re-calibrate or stop).
    """

    def __init__(self, instrument: str, address: str, command: str, what: str, attempts: int, *,
                 repeatable: bool = True):
        self.instrument, self.address, self.command = instrument, address, command
        self.what, self.attempts, self.repeatable = what, attempts, repeatable
        if repeatable:
            tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
            text = f"{instrument} at {address}: {command!r} failed after {tries}: {what}."
        else:
            text = (f"{instrument} at {address}: {command!r} failed: {what}. "
                    "It changes settings, so it was not repeated.")
        super().__init__(f"{text} The instrument was left as is.")

    def __str__(self) -> str:
        # qcodes adds "getting <parameter>" when the retries of a get give up inside it: the fault names the
        # command already (sets keep their "setting ..." context)
        return _with_context(self.args, skip="getting ")


class _Retryable(Exception):
    """One failed attempt of a query: ``what`` happened to ``command``; ``reconnect``: the line is down."""

    def __init__(self, command: str, what: str, *, reconnect: bool = False, cleared: bool = False):
        super().__init__(f"{command!r}: {what}")
        self.command, self.what, self.reconnect = command, what, reconnect
        self.cleared = cleared  # the line was cleared after the failure and a query answered since


class SentBatch:
    """A batch an instrument was sent (ScpiErrorCheckingInstrument.send_batch) whose reply is read by ``replies``."""

    def __init__(self, instrument: Any, handle: Any, command: str, queries: list[str]):
        self.instrument, self.handle, self.command, self.queries = instrument, handle, command, queries

    def replies(self) -> list[str]:
        """The queries' answers, the error entry checked (InstrumentError when it is not 0), as write_batch."""
        return self.instrument._batch_replies(self.handle, self.command, self.queries)


def parse_error_reply(reply: str) -> tuple[int, str]:
    """Split a ``SYST:ERR?`` reply into (code, text); a malformed reply is an error itself."""
    match = _ERROR_REPLY.match(reply)
    if match is None:
        raise ValueError(f"expected an error-queue reply like '-113,\"Undefined header\"', got {reply!r}")
    return int(match.group(1)), match.group(2)


def block_unit(header: str, data: bytes) -> bytes:
    """A program unit ``header`` + IEEE 488.2 definite-length block of ``data`` (for ``write_batch``)."""
    length = str(len(data)).encode("ascii")
    return header.encode("ascii") + b"#" + str(len(length)).encode("ascii") + length + bytes(data)


def _header(unit: bytes) -> bytes:
    """A program unit's header (up to its first space), without copying the rest (a block of megabytes)."""
    space = unit.find(b" ")
    return unit if space < 0 else unit[:space]


def _shown_unit(unit: bytes) -> str:
    """A program unit for messages and logs: a binary block as ``<block of N bytes>``."""
    mark = unit.find(b"#")  # (not partition: it would copy a block of megabytes to show its length)
    if mark < 0:
        return unit.decode("ascii", errors="replace")
    return f"{unit[:mark].decode('ascii', errors='replace')}<block of {len(unit) - mark} bytes>"


def parse_bool(reply: str) -> bool:
    """SCPI booleans come back as 0/1 (sometimes +0/+1 or ON/OFF)."""
    text = reply.strip().upper()
    if text in ("ON", "OFF"):
        return text == "ON"
    value = float(text)
    if value not in (0.0, 1.0):  # e.g. a line left over from another reply: the stream is out of step
        raise ValueError(f"expected a SCPI boolean (0, 1, ON or OFF), got {reply.strip()!r}")
    return value == 1.0


def parse_float(reply: str) -> float:
    """A setting or reading as a number; one that parses as NaN or infinity is refused (ValueError: an unreadable
    reply, asked again) instead of being handed on, where every comparison would let it through."""
    value = float(reply)
    if not math.isfinite(value):
        raise ValueError(f"{reply.strip()!r} is not a finite number")
    return value


def parse_int(reply: str) -> int:
    """Integers may come back in NR3 form (``+1.00000000E+000``)."""
    return int(round(float(reply)))


def describe_unreadable(reply: str, error: BaseException) -> str:
    """``reply 'xx#@' is not a number`` (or what the parser said), for InstrumentFault messages."""
    detail = str(error.args[0]) if error.args else type(error).__name__
    if isinstance(error, ValueError) and ("float" in detail or "int()" in detail):
        return f"reply {reply!r} is not a number"
    if isinstance(error, KeyError):
        return f"reply {reply!r} is not one of the expected values"
    return f"reply {reply!r} cannot be read ({type(error).__name__}: {detail})"


# --- retries -----------------------------------------------------------------------------------

class QueryRetries:
    """Bounded retries of idempotent queries for a qcodes instrument (mix in before its qcodes base).

    The subclass implements ``_ask_once(cmd) -> str`` (raising ``_Retryable`` on a timeout or a lost
    connection, and setting ``_last_reply``), ``_recover(failure)`` (reconnect before a retry) and
    ``fault_address``. Its Parameters and its channels' are built by ``RetriedGets`` (a reply their
    parser refuses is retried too). Each retry is logged and told to ``retry_events`` observers.
    """

    _in_retry = False                               # a retry loop is running: nested calls run once
    _last_reply: tuple[str, str] | None = None      # (command, reply) of the latest ask, for messages

    @property
    def fault_address(self) -> str:
        raise NotImplementedError

    def _ask_once(self, cmd: str) -> str:
        raise NotImplementedError

    def _recover(self, failure: _Retryable) -> None:
        raise NotImplementedError

    _read_together: dict[str, str] = {}              # query -> its reply from a compound query (replies_read_together)

    # -- queries ---------------------------------------------------------------------------------
    def ask_raw(self, cmd: str) -> str:
        return self._with_retries(lambda: self._ask_once(cmd))

    def reply_read_together(self, cmd: str, ask: Callable[[str], str]) -> str:
        """The reply to ``cmd`` from the compound query under way (once), else ``ask(cmd)``."""
        reply = self._read_together.pop(cmd, None)
        if reply is None:
            return ask(cmd)
        self._last_reply = (cmd, reply)  # a reply the parser refuses is then retried as a query of its own
        return reply

    def ask_parsed(self, cmd: str, parser: Callable[[str], T]) -> T:
        """``parser(ask(cmd))`` with the retries; a reply the parser refuses counts as garbled."""
        return self._with_retries(lambda: self._readable(lambda: parser(self._ask_once(cmd))))

    def get_with_retries(self, get: Callable[[], T]) -> T:
        """``get()`` (asks and reads their replies) with the retries; a reply it cannot read counts as garbled."""
        return self._with_retries(lambda: self._readable(get))

    def _with_retries(self, attempt: Callable[[], T]) -> T:
        if self._in_retry:
            return attempt()
        self._in_retry = True
        try:
            failure: _Retryable | None = None
            for number in range(1, QUERY_ATTEMPTS + 1):
                try:
                    if failure is not None:
                        self._recover(failure)
                    return attempt()
                except _Retryable as failed:  # (a failed reconnect names no command: keep the query's)
                    failure = failed if failed.command or failure is None else _Retryable(
                        failure.command, failed.what, reconnect=True)
                if number < QUERY_ATTEMPTS:
                    pause_s = RETRY_BACKOFF_S[min(number, len(RETRY_BACKOFF_S)) - 1]
                    log.warning("%s: %r: %s (attempt %d of %d); retrying in %g s", self.name, failure.command,
                                failure.what, number, QUERY_ATTEMPTS, pause_s)
                    notify(QueryRetried(self.name, self.fault_address, failure.command, failure.what, number,
                                        QUERY_ATTEMPTS, pause_s))
                    time.sleep(pause_s)
            raise InstrumentFault(self.name, self.fault_address, failure.command, failure.what,
                                  QUERY_ATTEMPTS) from failure
        finally:
            self._in_retry = False

    def _readable(self, attempt: Callable[[], T]) -> T:
        """Run a get; a parse failure of a reply becomes a retryable 'garbled reply'."""
        self._last_reply = None
        try:
            return attempt()
        except (InstrumentError, InstrumentFault, _Retryable):
            raise
        except _PARSE_ERRORS as error:
            if self._last_reply is None:
                raise  # not about a reply: a bug, not a fault
            command, reply = self._last_reply
            raise _Retryable(command, describe_unreadable(reply, error)) from error


class RetriedGets:
    """Mix into a qcodes instrument or channel (before its qcodes base) whose root is a ``QueryRetries``:
    every gettable Parameter it adds gets a callable ``get_cmd`` that asks (a ``str`` get_cmd) or runs the
    given callable and reads the reply with the Parameter's ``get_parser`` and ``val_mapping`` inside the
    root's retries. qcodes then converts the same reply again as usual (cheap, and it cannot fail twice).

    Why not wrap ``parameter.get``: that rebinds a qcodes method on every instance; ``get_cmd`` is the
    constructor argument qcodes offers for a custom get. Parameters built directly (not via
    ``add_parameter``) and the ``timeout`` parameter (no instrument I/O) are left as qcodes builds them.
    """

    def add_parameter(self, name: str, parameter_class: Any = None, **kwargs: Any) -> Any:
        get_cmd = kwargs.get("get_cmd")
        if get_cmd is not None and get_cmd is not False and name != "timeout" and parameter_class in (None, Parameter):
            kwargs["get_cmd"] = self._retried_get(get_cmd, kwargs.get("get_parser"), kwargs.get("val_mapping"))
            if isinstance(get_cmd, str):  # one query, one reply: it can be asked together with others
                self.__dict__.setdefault("query_of_parameter", {})[name] = get_cmd
        return super().add_parameter(name, parameter_class, **kwargs)

    def _retried_get(self, get_cmd: str | Callable[[], Any], get_parser: Callable[[Any], Any] | None,
                     val_mapping: Any) -> Callable[[], Any]:
        read = (lambda: self.root_instrument.reply_read_together(get_cmd, self.ask)) if isinstance(get_cmd, str) \
            else get_cmd
        check = _reply_check(get_parser, val_mapping)

        def get() -> Any:
            return self.root_instrument.get_with_retries(lambda: check(read()))

        return get


def _reply_check(get_parser: Callable[[Any], Any] | None, val_mapping: Any) -> Callable[[Any], Any]:
    """The reply unchanged if qcodes can convert it as it will (``get_parser``, then the inverted
    ``val_mapping``, a miss raising KeyError as qcodes does); scale and offset cannot refuse a number."""
    inverse = invert_val_mapping(val_mapping) if val_mapping is not None else None

    def check(reply: Any) -> Any:
        value = get_parser(reply) if get_parser is not None else reply
        if inverse is not None and value not in inverse:
            try:
                inverse[int(value)]
            except (ValueError, KeyError):
                raise KeyError(f"'{value}' not in val_mapping") from None
        return reply

    return check


# --- VISA SCPI instruments ---------------------------------------------------------------------

class ScpiErrorCheckingInstrument(RetriedGets, QueryRetries, VisaInstrument):
    """A VisaInstrument that reads the error queue after every write and raises on an error, and
    retries idempotent queries (module docstring).

    ``error_query`` is ``SYST:ERR?``. Queries are not followed by an error check (that would
    double the traffic of every get), but a query that times out (how SCPI instruments answer an
    unknown query) is followed by one, so the user sees the instrument's reason, not a bare timeout.
    """

    error_query = "SYST:ERR?"
    default_terminator = "\n"
    _queue_answers = True  # False once an error-queue probe went unanswered in this retry loop
    _unconfirmed_write: str | None = None  # a write whose error check is under way

    @property
    def fault_address(self) -> str:
        return str(self.address)

    # -- error queue -------------------------------------------------------------------------------
    def read_error_queue(self) -> list[tuple[int, str]]:
        """Pop every entry of the error queue (without raising); empty list when there is none."""
        errors = []
        for _ in range(_MAX_ERRORS_READ):
            code, text = self.ask_parsed(self.error_query, parse_error_reply)
            if code == 0:
                break
            errors.append((code, text))
        return errors

    def check_errors(self, command: str = "(previous commands)") -> None:
        """Raise InstrumentError if the error queue holds anything, blaming ``command``."""
        errors = self.read_error_queue()
        if errors:
            raise InstrumentError(self.name, command, list(errors))

    def clear_errors(self) -> None:
        """``*CLS``: empty the error queue so stale errors are not blamed on our commands."""
        self._send_once("*CLS", lambda: VisaInstrument.write_raw(self, "*CLS"))

    def power_cycled(self) -> bool:
        """``*ESR?`` bit 7: switched off and on since the last ``*ESR?``/``*CLS`` (reading clears it). Inside
        ``replies_read_together`` its reply is the compound query's (settings_evidence)."""
        return bool(self._with_retries(lambda: self._readable(
            lambda: parse_int(self.reply_read_together("*ESR?", self._ask_once)))) & ESR_POWER_ON)

    # -- writes (never repeated) -------------------------------------------------------------------
    # True: a set and its error query go in ONE message (write_batch), one round trip instead of two, for an
    # instrument that parses a whole message at its terminator and answers the units' queries in order. The price is
    # paid only on a command error: the instrument then discards the rest of the message, the error query with it,
    # and the reply is waited for until the VISA timeout before the error queue is read on its own.
    error_query_with_set = False

    def write_raw(self, cmd: str) -> None:
        if self.error_query_with_set:
            self.write_batch([cmd])
            return
        self._send_once(cmd, lambda: VisaInstrument.write_raw(self, cmd))
        self._check_write(cmd)

    def write_binary_block(self, header: str, values: Any, datatype: str) -> None:
        """``header`` followed by an IEEE 488.2 definite-length block, then an error check."""
        command = f"{header}<block of {len(values)} values>"
        self.visa_log.debug(f"Writing binary block: {header}<{len(values)} x {datatype}>")
        self._send_once(command, lambda: self.visa_handle.write_binary_values(header, values, datatype=datatype))
        self._check_write(command)

    def write_batch(self, units: Sequence[str | bytes]) -> list[str]:
        """Send program units as ONE message with ``;:SYST:ERR?`` appended; return the replies of the
        units that are queries (in order), after checking the error entry that ends the reply.

        Why: a set followed by its own error check costs two round trips; a compound message (SCPI
        1.2: units separated by ``;``, replies joined by ``;``) costs one for any number of sets and
        short queries. ``units`` are text, or bytes for units holding a binary block (``block_unit``).
        Query replies must not hold ``;`` or LF (numbers, words). Writes are never repeated: when the
        reply does not come back readable (a command error makes an instrument discard the rest of a
        message, the error query with it), the ordinary error check with its retries decides, and the
        queries are asked again on their own.
        """
        return self.send_batch(units).replies()

    def send_batch(self, units: Sequence[str | bytes]) -> SentBatch:
        """write_batch's message sent, its reply not read yet (``SentBatch.replies`` reads and checks it). Why: a
        step that starts or stops several instruments sends to each first and then reads every reply
        (``roles.together``): one round trip for all of them. Nothing else may talk to this instrument in between."""
        encoded = [u if isinstance(u, bytes) else u.encode("ascii") for u in units]
        if not encoded:
            raise ValueError("write_batch needs at least one program unit")
        queries = [u.decode("ascii") for u in encoded if _header(u).endswith(b"?")]
        error_unit = (self.error_query if self.error_query.startswith(":") else ":" + self.error_query).encode("ascii")
        handle = self.visa_handle
        termination = (handle.write_termination or "").encode("ascii")
        message = b";".join(encoded + [error_unit + termination])  # one copy of a block of megabytes
        shown = ";".join(_shown_unit(u) for u in encoded)
        command = shown if len(shown) <= 200 else shown[:200] + "..."
        self.visa_log.debug(f"Writing batch of {len(encoded)} units: {command}")
        self._send_once(command, lambda: visa_connection.send_message(handle, message))
        return SentBatch(self, handle, command, queries)

    def _batch_replies(self, handle: Any, command: str, queries: list[str]) -> list[str]:
        """The reply to a batch sent on ``handle``: its queries' answers, once its error entry says 0 (read where it
        was sent, as write_batch always did; SentBatch.replies)."""
        try:
            reply = handle.read()
            *answers, error_reply = reply.strip().split(";", len(queries))
            if len(answers) != len(queries):
                raise ValueError(f"expected {len(queries) + 1} replies, got {reply!r}")
            code, text = parse_error_reply(error_reply)
        except (pyvisa.VisaIOError, OSError, UnicodeDecodeError, ValueError):
            self._check_write(command)  # the error queue explains it, or the line is reopened and it is clean
            return [self.ask(query) for query in queries]
        if code != 0:
            raise InstrumentError(self.name, command, [(code, text)] + self.read_error_queue())
        return answers

    def _check_write(self, command: str) -> None:
        """The error check of a write; a lost connection meanwhile makes the write itself uncertain."""
        self._unconfirmed_write = command
        try:
            self.check_errors(command)
        except InstrumentFault as fault:
            if fault.command == command:
                raise
            raise InstrumentFault(self.name, fault.address, f"{fault.command} (the check after {command})",
                                  fault.what, fault.attempts) from fault
        finally:
            self._unconfirmed_write = None

    def _send_once(self, command: str, send: Callable[[], Any]) -> None:
        try:
            self._reconnect_if_dropped()
        except _Retryable as failure:
            raise InstrumentFault(self.name, self.fault_address, command, f"{failure.what}; nothing was sent", 0,
                                  repeatable=False) from failure
        try:
            send()
        except (pyvisa.VisaIOError, OSError) as error:
            raise InstrumentFault(self.name, self.fault_address, command,
                                  f"sending failed ({_describe(error)}); it may or may not have arrived", 1,
                                  repeatable=False) from error

    # -- compound queries -------------------------------------------------------------------------
    @contextmanager
    def replies_read_together(self, queries: Sequence[str]) -> Iterator[None]:
        """Ask ``queries`` in one program message (IEEE 488.2: units separated by ``;``, each rooted by ``:``);
        inside the block each query's Parameter get takes its reply from it instead of asking again.

        Why: the session reads every setting back after each batch (a reset or a foreign write shows as a
        changed setting); one message per instrument instead of one per setting. A reply whose units do not
        match the queries one to one is not used: each get then asks on its own, as without the block.
        """
        self._read_together = compound_replies(self.ask, queries)
        try:
            yield
        finally:
            self._read_together = {}

    # -- one query attempt -------------------------------------------------------------------------
    def _with_retries(self, attempt: Callable[[], T]) -> T:
        if not self._in_retry:
            self._queue_answers = True
        return super()._with_retries(attempt)

    def _ask_once(self, cmd: str) -> str:
        self._reconnect_if_dropped()
        try:
            reply = VisaInstrument.ask_raw(self, cmd)
        except pyvisa.VisaIOError as error:
            if error.error_code != pyvisa.constants.StatusCode.error_timeout:
                raise _Retryable(cmd, f"connection failed ({_describe(error)})", reconnect=True) from error
            raise self._timed_out(cmd, error) from error
        except UnicodeDecodeError as error:
            raise _Retryable(cmd, f"reply {error.object!r} is not ASCII text") from error
        except OSError as error:
            raise _Retryable(cmd, f"connection closed ({_describe(error)})", reconnect=True) from error
        self._last_reply = (cmd, reply)
        return reply

    def _timed_out(self, cmd: str, error: pyvisa.VisaIOError) -> _Retryable:
        """A retryable failure, or InstrumentError when the error queue explains the silence. The query may
        still be answered late, so the line is cleared before the queue is asked (never read a late reply as
        the error entry)."""
        if self._dropped():
            return _Retryable(cmd, "connection closed", reconnect=True)
        if cmd != self.error_query and self._queue_answers:
            try:
                self._clear_line()
            except _Retryable as failed:
                return _Retryable(cmd, failed.what, reconnect=True)
            errors = self._probe_error_queue()
            if errors:
                raise InstrumentError(self.name, cmd, errors) from error
            return _Retryable(cmd, f"no reply within {self._timeout_s():g} s", cleared=self._queue_answers)
        return _Retryable(cmd, f"no reply within {self._timeout_s():g} s")

    def _probe_error_queue(self) -> list[tuple[int, str]]:
        """The queue's entries, once per retry loop; an instrument that does not answer it is noted."""
        errors: list[tuple[int, str]] = []
        try:
            for _ in range(_MAX_ERRORS_READ):
                code, text = parse_error_reply(self._ask_once(self.error_query))
                if code == 0:
                    break
                errors.append((code, text))
        except (_Retryable, ValueError):
            self._queue_answers = False
        return errors

    @contextmanager
    def timeout_for_work(self, work_s: float) -> Iterator[None]:
        """The VISA timeout lengthened, for the block, by what the instrument was asked to do (``work_s``: an
        averaging time times the readings, a settling time) times ``WORK_TIMEOUT_FACTOR``; restored after.

        Why: the ordinary timeout bounds how long an idle instrument takes to answer. A reading averaged for 10 s
        answers after 10 s, and 100 readings of 0.1 s in one message after 10 s: that is not a fault."""
        handle = self.visa_handle
        base_ms = handle.timeout
        if base_ms is None or not work_s > 0.0 or math.isinf(base_ms):
            yield
            return
        handle.timeout = base_ms + 1000.0 * WORK_TIMEOUT_FACTOR * work_s
        try:
            yield
        finally:
            self.visa_handle.timeout = base_ms  # the handle may have been reopened meanwhile

    def _timeout_s(self) -> float:
        timeout_ms = self.visa_handle.timeout
        return math.inf if timeout_ms is None else timeout_ms / 1000

    # -- the connection ----------------------------------------------------------------------------
    def _recover(self, failure: _Retryable) -> None:
        if failure.reconnect:
            self._connection_lost()
            if not visa_connection.is_raw_socket(self.visa_handle):
                self._reconnect()  # a broken GPIB/USB session is reopened, then cleared below
        if not failure.cleared:
            self._clear_line()

    def _clear_line(self) -> None:
        """Drop any reply still on its way: reopen a raw socket, device-clear any other session."""
        if visa_connection.is_raw_socket(self.visa_handle):
            self._reconnect()
        else:
            try:
                self.device_clear()  # qcodes: viClear (serial: discard its buffers; pyvisa-sim: nothing)
            except Exception as error:  # noqa: BLE001 - the next attempt reports it
                raise _Retryable("", f"device clear failed ({_describe(error)})", reconnect=True) from error

    def _connection_lost(self) -> None:
        """Why not just reconnect: a write awaiting its error check may not have arrived, and the
        error queue cannot tell (a lost write leaves no error). That write fails here, unrepeated."""
        if self._unconfirmed_write is not None:
            raise InstrumentFault(self.name, self.fault_address, self._unconfirmed_write,
                                  "the connection closed before its error check; it may or may not have taken "
                                  "effect", 1, repeatable=False)

    def _dropped(self) -> bool:
        sock = visa_connection.visa_socket(self.visa_handle)
        return sock is not None and socket_closed(sock)

    def _reconnect_if_dropped(self) -> None:
        if self._dropped():
            self._connection_lost()
            log.warning("%s: the connection to %s was closed; reopening it", self.name, self.fault_address)
            notify(ConnectionReopened(self.name, self.fault_address))
            self._reconnect()

    def reconnect(self) -> None:
        """Close and reopen the VISA resource (same address, terminations and timeout): also drops any late,
        partial or junk reply still on its way. Settings on the instrument are untouched."""
        visa_connection.reopen(self)

    def _reconnect(self) -> None:
        try:
            self.reconnect()
        except Exception as error:  # noqa: BLE001 - the next attempt reports it
            raise _Retryable("", f"cannot reopen the connection ({_describe(error)})", reconnect=True) from error


def _describe(error: BaseException) -> str:
    if isinstance(error, pyvisa.VisaIOError):
        return f"{error.abbreviation}: {error.description}"
    return str(error) or type(error).__name__


# --- resets --------------------------------------------------------------------------------------

def changed_settings(driver: Any) -> dict[str, tuple[Any, Any]]:
    """Settings whose read-back differs from what the driver last set or read: {name: (cached, now)}.

    Why: after a reset an instrument is back at its defaults while the driver's cache still holds
    the session's settings; only settable parameters with a cached value are compared.
    """
    return settings_evidence(driver, power_on_bit=False)[1]


def settings_evidence(driver: Any, *, power_on_bit: bool = True,
                      plan: SettingsPlan | None = None) -> tuple[bool, dict[str, tuple[Any, Any]]]:
    """(``*ESR?`` power-on bit set, ``changed_settings``): where the driver reads replies together, ``*ESR?`` and
    every setting in ONE compound query (``*ESR?`` first, as when asked on its own before the settings). The bit is
    False for a driver without ``power_cycled`` or without ``power_on_bit``. ``plan``: the driver's SettingsPlan,
    kept by a caller that checks it again and again."""
    plan = SettingsPlan(driver) if plan is None else plan
    cached = [(parameter, query, parameter.cache.get(get_if_invalid=False)) for parameter, query in plan.entries()]
    cached = [entry for entry in cached if entry[2] is not None]
    ask_esr = power_on_bit and hasattr(driver, "power_cycled")
    queries = (["*ESR?"] if ask_esr else []) + [query for _, query, _ in cached if query]
    changed: dict[str, tuple[Any, Any]] = {}
    with _read_together(driver, queries):
        power_cycled = bool(driver.power_cycled()) if ask_esr else False
        replies = getattr(driver, "_read_together", None) or {}  # our drivers': query -> its reply, taken once
        for parameter, query, value in cached:
            reply = replies.get(query) if query else None
            if reply is not None and plan.read_back_before(parameter, reply, value):
                del replies[query]
                continue
            now = parameter.get()
            if _same(value, now):
                plan.remember(parameter, reply, value)
            else:
                changed[parameter.full_name] = (value, now)
    return power_cycled, changed


def get_together(*parameters: Any) -> list[Any]:
    """The parameters' values, asked in ONE compound query where their instrument reads replies together (each
    Parameter's own get then takes its reply from the message, with its parser and retries); else one by one.

    Why: a check of several settings before an action (e.g. an attenuator's mode and attenuation before its shutter
    opens) costs one round trip instead of one per setting."""
    driver = getattr(parameters[0], "root_instrument", None)
    queries = [_together_query(parameter, getattr(driver, "query_of", None)) for parameter in parameters]
    with _read_together(driver, [query for query in queries if query]):
        return [parameter.get() for parameter in parameters]


def _read_together(driver: Any, queries: Sequence[str]) -> Any:
    """The driver's ``replies_read_together(queries)`` block, or a block that changes nothing for a driver without."""
    together = getattr(driver, "replies_read_together", None)
    return together(queries) if together is not None else nullcontext()


def _together_query(parameter: Any, query_of: Callable[[Any], str | None] | None) -> str | None:
    """The query whose reply a Parameter's get takes inside ``replies_read_together``: its own (RetriedGets, or one a
    driver registered) or, for upstream parameters, the driver's ``query_of``; None: asked on its own."""
    return (getattr(parameter.instrument, "query_of_parameter", {}).get(parameter.name)
            or (query_of(parameter) if query_of is not None else None))


class SettingsPlan:
    """A driver's settable parameters (its submodules' too) and the query of each that can be asked together with
    others, worked out once and again whenever a parameter or submodule is added or removed.

    Why: walking qcodes' parameters and their settable/gettable properties cost more than parsing the replies of a
    check after every batch."""

    def __init__(self, driver: Any):
        self.driver = driver
        self._members: list[Any] = []  # kept, so that no id in _key is reused by a new object
        self._key: list[int] | None = None
        self._entries: list[tuple[Any, str | None]] = []
        self._agreed: dict[Any, tuple[str, Any]] = {}  # parameter -> (a reply, the cached value it read back as)

    def remember(self, parameter: Any, reply: str | None, value: Any) -> None:
        """``reply`` read back as the cached ``value`` (no change); None: nothing to remember."""
        if reply is not None:
            self._agreed[parameter] = (reply, value)

    def read_back_before(self, parameter: Any, reply: str, value: Any) -> bool:
        """Whether this very reply read back as this very cached value before: the parameter's get would parse it
        to what it did then. Why: qcodes' get and its parser take ~15 us a parameter, 0.8 ms of CPU a batch over
        the station's settings (session 28: 2.74 -> 1.91 ms a check); a changed setting or a changed cache value
        still goes through the get."""
        agreed = self._agreed.get(parameter)
        return (agreed is not None and agreed[0] == reply and type(agreed[1]) is type(value)
                and agreed[1] == value)

    def entries(self) -> list[tuple[Any, str | None]]:
        members = _module_members(self.driver)
        key = list(map(id, members))
        if key != self._key:
            query_of = getattr(self.driver, "query_of", None)  # a driver that reads upstream parameters together
            self._entries = [(parameter, _together_query(parameter, query_of))
                             for parameter in _settable_parameters(self.driver)]
            self._members, self._key = members, key
        return self._entries


def _module_members(module: Any) -> list[Any]:
    """``module``'s parameters and submodules, recursively (one added or removed changes the list)."""
    members = list(getattr(module, "parameters", {}).values())
    for submodule in getattr(module, "submodules", {}).values():
        members.append(submodule)
        if not isinstance(submodule, ChannelTuple):
            members += _module_members(submodule)
    return members


def compound_replies(ask: Callable[[str], str], queries: Sequence[str]) -> dict[str, str]:
    """{query: its reply} for ``queries`` asked by ``ask`` in ONE program message (IEEE 488.2: units separated by ``;``,
    each rooted by ``:``); {} without asking for fewer than two, and {} when the reply's units do not match the
    queries one to one (each is then asked on its own)."""
    unique = list(dict.fromkeys(queries))
    if len(unique) < 2:
        return {}
    replies = split_response_units(ask(";".join(q if q.startswith(("*", ":")) else ":" + q for q in unique)))
    return dict(zip(unique, replies)) if len(replies) == len(unique) else {}


def split_response_units(reply: str) -> list[str]:
    """A response message's units (IEEE 488.2 8.4.1: separated by ``;``), a ``;`` inside a quoted string kept."""
    units, start, quote = [], 0, ""
    for index, char in enumerate(reply):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == ";":
            units.append(reply[start:index])
            start = index + 1
    units.append(reply[start:])
    return [unit.strip() for unit in units]


def detect_reset(driver: Any) -> list[str]:
    """Evidence that an instrument was reset or power-cycled (empty: none). Reads the instrument."""
    evidence = []
    if hasattr(driver, "power_cycled") and driver.power_cycled():
        evidence.append("*ESR? power-on bit set: the instrument was switched off and on")
    evidence += [f"{name} reads {now!r}, was {cached!r}" for name, (cached, now) in changed_settings(driver).items()]
    return evidence


def _settable_parameters(module: Any) -> list[Any]:
    """The settings to read back: settable and gettable parameters, without a module's ``views_of_settings`` (a
    parameter that is another's setting in other units, e.g. a power in W beside its dBm: read back through that one)."""
    found: dict[int, Any] = {}
    views = getattr(module, "views_of_settings", {})
    for parameter in getattr(module, "parameters", {}).values():
        if parameter.settable and parameter.gettable and parameter.name not in ("timeout", "IDN", *views):
            found[id(parameter)] = parameter
    for submodule in getattr(module, "submodules", {}).values():
        if not isinstance(submodule, ChannelTuple):
            found.update((id(p), p) for p in _settable_parameters(submodule))
    return list(found.values())


def _same(cached: Any, now: Any) -> bool:
    if isinstance(cached, float) or isinstance(now, float):
        try:
            return math.isclose(float(cached), float(now), rel_tol=1e-6, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return cached == now
