"""roles.together: several instruments' messages sent first, then every reply read, so that a step on many
instruments (the capture's starts and stops) costs one round trip; a failure never leaves a reply on a line or
keeps a later message (a stop) from being sent."""

from __future__ import annotations

import pytest

from qslab.instruments.optical.roles import Answered, together


class Line:
    """One instrument's connection: records, in one shared log, when its message is sent and its reply read."""

    def __init__(self, name: str, log: list[str], refuse_send: bool = False, refuse_reply: bool = False):
        self.name, self.log, self.refuse_send, self.refuse_reply = name, log, refuse_send, refuse_reply

    def sent(self):
        if self.refuse_send:
            self.log.append(f"{self.name} not sent")
            raise OSError(f"{self.name}: the line dropped")
        self.log.append(f"{self.name} sent")
        return self

    def replies(self):
        self.log.append(f"{self.name} read")
        if self.refuse_reply:
            raise RuntimeError(f"{self.name} refused the message")
        return []


def test_every_message_is_sent_before_any_reply_is_read():
    log: list[str] = []
    together(Line("client", log).sent, Line("server", log).sent, Answered)
    assert log == ["client sent", "server sent", "client read", "server read"]


def test_a_refused_reply_is_raised_once_every_other_reply_was_read():
    log: list[str] = []
    with pytest.raises(RuntimeError, match="client refused"):
        together(Line("client", log, refuse_reply=True).sent, Line("server", log, refuse_reply=True).sent)
    assert log == ["client sent", "server sent", "client read", "server read"]  # the first failure raised


def test_a_message_that_could_not_be_sent_keeps_no_later_one_from_going_out():
    log: list[str] = []
    with pytest.raises(OSError, match="layer: the line dropped"):
        together(Line("layer", log, refuse_send=True).sent, Line("client", log).sent)
    assert log == ["layer not sent", "client sent", "client read"]  # the client's stop still went out and was read


def test_an_interrupt_while_sending_still_sends_and_reads_the_rest_then_propagates():
    """As the nested try/finally it replaces: the client's stop goes out even when the layer's was interrupted."""
    log: list[str] = []

    def interrupted():
        log.append("layer interrupted")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        together(interrupted, Line("client", log).sent)
    assert log == ["layer interrupted", "client sent", "client read"]
