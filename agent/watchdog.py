"""No thread of the agent dies silently: a failed thread body is restarted, counted and explained.

Every long-lived agent thread is started by `Watchdog.start(name, body, stop)`
and by nothing else: sink delivery (netagent.sinks.base, .syslog), the
Prometheus HTTP server (netagent.sinks.prometheus), sensor polling
(netagent.daemon), the pipeline dispatcher (netagent.pipeline) and the pod
index refresher (netagent.enrich.pods, the CRI client). The only other
threads are short-lived helpers whose caller joins them and sees their
result (netagent.netns.run_in, the parallel sink close in the daemon) and the
HTTP server's per-request threads (a failed request is answered with 500).

When the body raises (anything, including an exception injected into the
thread from outside, which is how tests kill one), the watchdog

  1. counts a restart for that thread and remembers why (exception type and text),
  2. says so on the agent's diagnostics (one line, rate limited per thread),
  3. waits a growing pause (so a failure that repeats at once cannot spin a
     core) unless the thread is being stopped, then runs the body again.

The body is expected to be restartable: it keeps its state in its owner's
object and picks up where it was (the syslog sink keeps its spool open and
resends what was not confirmed; a sensor runner keeps its sensor attached).

`status()` goes into the heartbeat (netagent.agent.watchdog), so the
restarts and their reasons reach the SIEM with the agent's other health,
with the supervised threads that run now (`running`).
"""

import threading
import time
import traceback

# pause before the n-th consecutive restart: 0.1 s doubling up to 30 s;
# a body that then ran for a minute without failing starts again at 0.1 s
_FIRST_PAUSE = 0.1
_MAX_PAUSE = 30.0
_HEALTHY_AFTER = 60.0

# How long an idle supervised thread (the dispatcher, a sink's delivery) sleeps
# between looks. Its waits end as soon as there is work or a stop, so this bound
# is not a latency: it is only the longest an exception injected into the sleeping
# thread takes to land (CPython raises it at the thread's next Python instruction).
# Each look costs a wakeup, the bulk of an idle agent's CPU time at 0.2 s (issue 12).
IDLE_WAKE = 5.0


class Watchdog:
    def __init__(self, say=None):
        self._lock = threading.Lock()
        self._threads: dict[str, dict] = {}
        self._supervised: list[threading.Thread] = []  # started by start(); pruned once ended
        self._say = say  # callable(message, level); netagent.log.log by default

    def _log(self, message: str, level: int) -> None:
        say = self._say
        if say is None:
            from netagent.log import log as say
        say(message, level)

    def start(self, name: str, body, stop: threading.Event, on_failure=None, after=None) -> threading.Thread:
        """Start a daemon thread `name` that runs `body` under run(), then `after()` once
        (final work, e.g. a sensor's last poll) when the body has returned for good."""
        thread = threading.Thread(target=self._thread_main, args=(name, body, stop, on_failure, after),
                                  name=name, daemon=True)
        self._track(thread)
        thread.start()
        return thread

    def _track(self, thread: threading.Thread) -> None:
        with self._lock:
            if thread not in self._supervised:
                self._supervised = [t for t in self._supervised if t.is_alive()] + [thread]

    def _thread_main(self, name, body, stop, on_failure, after) -> None:
        while True:
            try:
                self.run(name, body, stop, on_failure)
                break
            except BaseException as exc:  # landed in the watchdog's own code (an injected exception)
                count = self._count(name, exc)
                self._log(f"watchdog: thread {name} failed ({type(exc).__name__}: {exc}); restarting it "
                          f"(restart {count})", 3)
                if stop.is_set():
                    break
        if after is not None:
            try:
                after()
            except BaseException as exc:
                self._count(name, exc)
                self._log(f"watchdog: thread {name}: its final step failed: {type(exc).__name__}: {exc}", 3)

    def _count(self, name: str, exc: BaseException) -> int:
        reason = f"{type(exc).__name__}: {exc}"
        where = _where(exc)
        with self._lock:
            rec = self._threads.setdefault(name, {"thread": name, "restarts": 0})
            rec["restarts"] += 1
            rec["last_reason"] = reason + (f" (at {where})" if where else "")
            rec["last_restart"] = time.time()
            return rec["restarts"]

    def run(self, name: str, body, stop: threading.Event, on_failure=None) -> None:
        """Run `body()` until it returns; restart it whenever it raises.

        `on_failure(exc)` (optional) runs after a failure, before the pause:
        it puts the owner back into a state the body can start from.
        """
        self._track(threading.current_thread())  # listed in status()["running"] however it was started
        pause = _FIRST_PAUSE
        while True:
            started = time.monotonic()
            try:
                body()
                return
            except BaseException as exc:  # SystemExit too: a thread must not end quietly
                reason = f"{type(exc).__name__}: {exc}"
                where = _where(exc)
                count = self._count(name, exc)
                if time.monotonic() - started > _HEALTHY_AFTER:
                    pause = _FIRST_PAUSE
                if count <= 3 or count % 100 == 0:
                    self._log(f"watchdog: thread {name} failed ({reason}{f' at {where}' if where else ''}); "
                              f"restarting it in {pause:g}s (restart {count})", 3)
                if on_failure is not None:
                    try:
                        on_failure(exc)
                    except Exception as again:
                        self._log(f"watchdog: thread {name}: cleanup after the failure failed too: "
                                  f"{type(again).__name__}: {again}", 3)
                if stop.wait(pause):
                    return
                pause = min(_MAX_PAUSE, pause * 2)

    def restarts(self) -> int:
        with self._lock:
            return sum(r["restarts"] for r in self._threads.values())

    def status(self) -> dict:
        with self._lock:
            threads = [dict(r) for r in self._threads.values()]
            running = sorted(t.name for t in self._supervised if t.is_alive())
        return {"restarts": sum(r["restarts"] for r in threads), "threads": threads, "running": running}


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame, so a restart names the place that failed."""
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return ""
    frame = tb[-1]
    return f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"


# The agent's one watchdog: sinks and sensor runners register with it,
# the daemon reports it in heartbeats and agent-stopped.
WATCHDOG = Watchdog()
