"""No thread of the agent dies silently (netagent.watchdog).

A thread is killed for real: an exception is raised inside it from outside
(CPython's PyThreadState_SetAsyncExc, the same thing that happens when a bug
raises in its loop). The watchdog must bring the thread's work back, count the
restart and say why, where the heartbeat reads it (WATCHDOG.status()).
"""

import ast
import ctypes
import os
import socket
import threading
import urllib.request

from netagent.sinks.file import FileSink
from netagent.sinks.prometheus import PrometheusSink
from netagent.watchdog import WATCHDOG, Watchdog
from waiting import wait_until

AGENT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "agent")


class KilledFromOutside(Exception):
    pass


def kill(thread: threading.Thread) -> None:
    """Raise KilledFromOutside inside `thread` at its next Python instruction."""
    hit = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(KilledFromOutside))
    assert hit == 1, f"thread {thread.name} not found"


def record(name: str) -> dict:
    return next((r for r in WATCHDOG.status()["threads"] if r["thread"] == name), {"restarts": 0})


def thread_named(name: str) -> threading.Thread:
    return next(t for t in threading.enumerate() if t.name == name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prometheus_http_thread_killed_is_restarted_counted_and_explained(capfd):
    sink = PrometheusSink("prom-wd", f"127.0.0.1:{free_port()}")
    sink.start()
    url = f"http://127.0.0.1:{sink.bound_port}/metrics"
    try:
        name = "sink-prom-wd-http"
        assert name in WATCHDOG.status()["running"]
        before = record(name)["restarts"]
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200
        # The accept thread may not be back from starting that request's handler thread yet
        # (a loaded machine): an exception landing there is socketserver's to report
        # (handle_error) and the loop serves on. Kill again until one lands in the loop itself.
        for _ in range(10):
            kill(thread_named(name))
            if wait_until(lambda: record(name)["restarts"] > before, timeout=3):
                break
        assert record(name)["restarts"] == before + 1, WATCHDOG.status()
        assert "KilledFromOutside" in record(name)["last_reason"]
        # scrapes are answered again, on the same port, by a thread the watchdog still runs
        assert wait_until(lambda: _answers(url)), "the /metrics endpoint did not come back"
        assert name in WATCHDOG.status()["running"]
        assert f"watchdog: thread {name} failed (KilledFromOutside" in capfd.readouterr().err
        sink.observe_agent(lambda: {"lost": {}})  # the agent collector serves with a snapshot
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        assert f'netagent_thread_restarts_total{{thread="{name}"}} {float(before + 1)}' in text
    finally:
        sink.close(2)
    assert wait_until(lambda: name not in WATCHDOG.status()["running"]), "close() ends the thread"
    assert not _answers(url)


def test_sink_delivery_thread_killed_delivers_on(tmp_path):
    path = tmp_path / "events.json"
    sink = FileSink("file-wd", str(path), max_bytes=2**20, backups=1)
    sink.start()
    try:
        name = "sink-file-wd"
        before = record(name)["restarts"]
        sink.submit(b'{"n":1}\n', {})
        assert sink.flush(10)
        kill(thread_named(name))
        assert wait_until(lambda: record(name)["restarts"] == before + 1), WATCHDOG.status()
        sink.submit(b'{"n":2}\n', {})
        assert sink.flush(10)
    finally:
        sink.close(2)
    assert path.read_text().splitlines() == ['{"n":1}', '{"n":2}']


def test_a_body_that_exits_with_systemexit_is_restarted_too():
    said = []
    wd = Watchdog(say=lambda message, level: said.append(message))
    stop = threading.Event()
    runs = []

    def body():
        runs.append(1)
        if len(runs) == 1:
            raise SystemExit("quietly")  # would end a plain thread without a word
        stop.wait()

    t = wd.start("t", body, stop)
    assert wait_until(lambda: len(runs) == 2)
    assert wd.status()["restarts"] == 1 and "SystemExit: quietly" in wd.status()["threads"][0]["last_reason"]
    assert said and "thread t failed (SystemExit: quietly" in said[0]
    stop.set()
    t.join(5)
    assert not t.is_alive() and wd.status()["running"] == []


def test_every_thread_the_agent_starts_goes_through_the_watchdog():
    """threading.Thread appears only in the watchdog, with the watchdog as its target, or in
    short-lived helpers whose caller joins them and gets their result or exception."""
    joined_helpers = {("netns.py", "run_in"), ("daemon.py", "_close_sinks")}
    found = set()
    for folder, _, files in os.walk(AGENT):
        for fname in files:
            if not fname.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(folder, fname)).read())
            for func in ast.walk(tree):
                if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(func):
                    if isinstance(node, ast.Call) and ast.unparse(node.func) in ("threading.Thread", "Thread"):
                        target = next((ast.unparse(k.value) for k in node.keywords if k.arg == "target"), "")
                        if not target.startswith("WATCHDOG."):
                            found.add((fname, func.name))
    assert found - joined_helpers == {("watchdog.py", "start")}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
