from __future__ import annotations

from crm_stream.operators.io.effects import EffectsWriter


class Recorder:
    def __init__(self, log):
        self.log = log

    def send(self, destination, key, value):
        self.log.append(("send", destination, value))

    def flush(self):
        self.log.append(("flush",))

    def close(self):
        pass

    def write(self, puts, deletes=()):
        self.log.append(("write", dict(puts), sorted(deletes)))


def test_outputs_are_durable_before_state_is_written():
    log: list = []
    writer = EffectsWriter(Recorder(log), Recorder(log))
    writer.write(
        [("put", "k1", b"1"), ("service", "c1", b"alert"), ("put", "k1", b"2"), ("del", "k2", None), ("deadletter", None, b"d")]
    )
    assert log == [("send", "service", b"alert"), ("send", "deadletter", b"d"), ("flush",), ("write", {"k1": b"2"}, ["k2"])]


def test_put_after_delete_wins_and_no_io_for_nothing():
    log: list = []
    writer = EffectsWriter(Recorder(log), Recorder(log))
    writer.write([("del", "k", None), ("put", "k", b"x")])
    writer.write([])
    assert log == [("write", {"k": b"x"}, [])]
