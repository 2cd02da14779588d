"""No thread of the agent dies silently: a failed thread body is restarted, counted and explained.

Every long-lived agent thread (sink delivery, sensor polling) runs its body
through `Watchdog.run(name, body, stop)`. When the body raises, the watchdog

  1. counts a restart for that thread and remembers why (exception type and text),
  2. says so on the agent's diagnostics (one line, rate limited per thread),
  3. waits a growing pause (so a failure that repeats at once cannot spin a
     core) unless the thread is being stopped, then runs the body again.

The body is expected to be restartable: it keeps its state in its owner's
object and picks up where it was (the syslog sink keeps its spool open and
resends what was not confirmed; a sensor runner keeps its sensor attached).

`status()` goes into the heartbeat (netagent.agent.watchdog), so the
restarts and their reasons reach the SIEM with the agent's other health.
"""

import threading
import time
import traceback

# pause before the n-th consecutive restart: 0.1 s doubling up to 30 s;
# a body that then ran for a minute without failing starts again at 0.1 s
_FIRST_PAUSE = 0.1
_MAX_PAUSE = 30.0
_HEALTHY_AFTER = 60.0


class Watchdog:
    def __init__(self, say=None):
        self._lock = threading.Lock()
        self._threads: dict[str, dict] = {}
        self._say = say  # callable(message, level); netagent.log.log by default

    def _log(self, message: str, level: int) -> None:
        say = self._say
        if say is None:
            from netagent.log import log as say
        say(message, level)

    def run(self, name: str, body, stop: threading.Event, on_failure=None) -> None:
        """Run `body()` until it returns; restart it whenever it raises.

        `on_failure(exc)` (optional) runs after a failure, before the pause:
        it puts the owner back into a state the body can start from.
        """
        pause = _FIRST_PAUSE
        while True:
            started = time.monotonic()
            try:
                body()
                return
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                where = _where(exc)
                with self._lock:
                    rec = self._threads.setdefault(name, {"thread": name, "restarts": 0})
                    rec["restarts"] += 1
                    rec["last_reason"] = reason + (f" (at {where})" if where else "")
                    rec["last_restart"] = time.time()
                    count = rec["restarts"]
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
        return {"restarts": sum(r["restarts"] for r in threads), "threads": threads}


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
