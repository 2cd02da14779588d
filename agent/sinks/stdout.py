"""stdout sink: JSON lines on standard output (the journal, under systemd)."""

import sys

from netagent.sinks.base import BufferedSink


class StdoutSink(BufferedSink):
    TYPE = "stdout"
    CONFIG_SCHEMA: dict = {}

    def __init__(self, name: str = "stdout", capacity: int = 20000, stream=None):
        super().__init__(name, capacity)
        # resolved at construction, so a test runner's captured stdout is honoured
        self.stream = stream if stream is not None else sys.stdout.buffer
        self._broken = False

    @classmethod
    def from_config(cls, cfg: dict) -> "StdoutSink":
        return cls(cfg["name"] or cls.TYPE, cfg["buffer_events"])

    def deliver(self, batch):
        if self._broken:
            # the reader went away (`netagent run | head`); nothing can arrive
            raise BrokenPipeError("stdout is closed")
        try:
            self.stream.write(b"".join(line for line, _ in batch))
            self.stream.flush()
        except BrokenPipeError:
            self._broken = True
            raise

    def shutdown(self):
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass
