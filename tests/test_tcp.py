"""Endpoints that are no SMTP server, seen by a bare TCP client."""

from __future__ import annotations

import socket

import pytest
from probe import RawSMTP, connect_outcome, open_connection

H = "mx.contoso.test"


def test_refuse_answers_the_syn_with_a_reset(make_world):
    world = make_world({"hosts": {H: {"kind": "refuse"}}})
    assert connect_outcome(world.address_of(H), world.port) == "refused"
    # Refused twice, and nobody else can take the port meanwhile.
    assert connect_outcome(world.address_of(H), world.port) == "refused"
    with pytest.raises(OSError):
        socket.socket().bind((world.address_of(H), world.port))


def test_blackhole_makes_connect_time_out_and_is_not_refused(make_world):
    world = make_world({"hosts": {H: {"kind": "blackhole"}}})
    for _ in range(2):
        assert connect_outcome(world.address_of(H), world.port, timeout=0.3) == "timeout"


def test_silent_accepts_and_never_greets(make_world):
    world = make_world({"hosts": {H: {"kind": "silent"}}})
    c = RawSMTP.connect(world.address_of(H), world.port, timeout=0.3)
    with pytest.raises(TimeoutError):
        c.reply()
    c.close()


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_close_on_accept(make_world, how):
    world = make_world({"hosts": {H: {"kind": "close_on_accept", "close": how}}})
    sock, outcome = open_connection(world.address_of(H), world.port)
    if sock is None:  # the reset can beat connect() itself
        assert (outcome, how) == ("reset", "rst")
    else:
        assert RawSMTP(sock).wait_closed() == how
    assert world.wait_until(lambda: bool(world.sessions) and world.sessions[0].ended_by is not None, 2)
    assert world.sessions[0].ended_by == f"server-{how}"


def test_close_on_accept_with_a_schedule_recovers(make_world):
    world = make_world({"hosts": {H: {"kind": "close_on_accept", "schedule": {"fail_first": 1}}}})
    first = RawSMTP.connect(world.address_of(H), world.port)
    assert first.wait_closed() == "fin"
    second = RawSMTP.connect(world.address_of(H), world.port)
    assert second.reply().code == 220
