"""`netagent run`: sensors attached, events flowing to sinks, until a signal.

Start order (so a configuration mistake never leaves anything in the kernel):
configuration validated -> sinks opened -> pipeline started -> sensors
attached -> `agent-started` event -> READY=1 to systemd.

Signals (handled on the main thread through a wakeup pipe, so nothing runs
inside a signal handler):
  SIGTERM, SIGINT  detach sensors (after a last poll), emit `agent-stopped`
                   with totals, flush sinks within [agent] shutdown_timeout, exit 0
  SIGHUP           reload the configuration file and reopen files; an invalid
                   file keeps the running configuration and says why
"""

import os
import select
import signal
import threading
import time

import orjson
import psutil

from netagent import __version__, config as config_mod
from netagent import registry, sdnotify
from netagent.configschema import SchemaError
from netagent.errors import AgentError, ConfigError, InsufficientPrivilege, ProbeUnavailable, UsageError
from netagent.events import new_event
from netagent.log import log
from netagent.memtrim import release_startup_memory, tune_allocator
from netagent.pipeline import PLACES, Pipeline
from netagent.sinks import sink_class
from netagent.watchdog import WATCHDOG

AGENT_DATASET = "netagent.agent"


class RateLimitedLog:
    """Repeated failures of one thing: the first line at once, then at most one a minute."""

    def __init__(self, every: float = 60.0):
        self.every = every
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, key: str, message: str, level: int = 4) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.every:
            extra = self._suppressed.pop(key, 0)
            log(message + (f" (and {extra} more like it)" if extra else ""), level)
            self._last[key] = now
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1


class SensorRunner:
    """One sensor: attached, polled every `interval` on its own thread, detached."""

    def __init__(self, section: str, module, cfg: dict, pipeline: Pipeline, ratelog: RateLimitedLog):
        self.section = section
        self.module = module
        self.cfg = cfg
        self.pipeline = pipeline
        self.ratelog = ratelog
        self.sensor = None
        self.state = "off"  # on | off | disabled
        self.attach_path: str | None = None
        self.reason: str | None = None
        self.polls = 0
        self.poll_errors = 0
        self.last_error: str | None = None
        self.events = 0
        self.queue_dropped = 0
        # what the sensor says about how it runs ("counters only", why; tracefs mounted):
        # the last few kept for the heartbeat, all counted
        self.notes: list[str] = []
        self.notes_total = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._final_losses: dict[str, int] = {}
        self._final_poll = True  # stop() polls once more (a handover polls itself)
        self.predecessor: SensorRunner | None = None  # armed, until hand_over() or cancel_handover()
        self.gate: threading.Event | None = None  # set once polling may begin

    def start(self, predecessor: "SensorRunner | None" = None) -> None:
        """Attach; an unusable sensor ends up off with the reason. A configuration
        the sensor rejects (bad filter, unknown reason name) raises ConfigError.

        `predecessor`: the running runner of the same sensor that this one
        replaces (reload). A sensor that can hand over exactly
        (`supports_handover`, see netagent.probes.drops) is attached on top of
        the armed predecessor and skips what it counts until hand_over()."""
        try:
            # the same decision `netagent doctor` reports (registry.plan_sensor)
            plan = registry.plan_sensor(self.module, self.cfg, self.section, announce=self.note)
            if plan.sensor is None:
                self.state = "disabled" if plan.state == "disabled" else self.state
                self.reason = plan.reason
                if plan.error is not None:
                    self.kind = type(plan.error)
                return
            sensor = plan.sensor
            for note in plan.notes:  # how well it runs, e.g. conntrack: counters only, and why
                self.note(note)
            if predecessor is not None:
                predecessor.sensor.arm_handover()
                self.predecessor = predecessor
                try:
                    self.attach_path = sensor.attach(predecessor=predecessor.sensor)
                except BaseException:
                    self.predecessor = None
                    predecessor.sensor.disarm_handover()
                    raise
            else:
                self.attach_path = sensor.attach()
        except (UsageError, SchemaError) as exc:
            raise ConfigError(str(exc), key=f"sensors.{self.section}") from None
        except AgentError as exc:  # before ValueError: unreadable node data (MalformedData) is not a config error
            self.reason = str(exc)
            self.kind = type(exc)
            return
        except ValueError as exc:
            raise ConfigError(str(exc), key=f"sensors.{self.section}") from None
        except Exception as exc:  # a sensor bug must not take the agent down
            self.reason = f"internal error while attaching: {type(exc).__name__}: {exc}"
            return
        self.sensor = sensor
        self.state = "on"
        self.reason = None
        # a failure outside the sensor's poll() (publishing, a bug) restarts the
        # loop with the sensor still attached: counted and explained by the watchdog
        self._thread = WATCHDOG.start(f"sensor-{self.section}", self._poll_loop, self._stop, after=self._last_poll)

    def _last_poll(self) -> None:
        if self._final_poll:
            self._poll_once()  # what the kernel counted since the last poll

    def _poll_loop(self) -> None:
        # the first poll waits for the daemon's agent-started event, so a SIEM sees that first
        while self.gate is not None and not self.gate.wait(0.05):
            if self._stop.is_set():
                return
        interval = float(getattr(self.sensor, "interval", None) or self.cfg.get("interval", 1.0))
        next_poll = time.monotonic() + interval
        while not self._stop.wait(max(0.0, next_poll - time.monotonic())):
            next_poll += interval
            if next_poll < time.monotonic():  # fell behind (slow poll): do not burst
                next_poll = time.monotonic() + interval
            self._poll_once()

    def _poll_once(self) -> None:
        try:
            events = self.sensor.poll()
        except Exception as exc:
            self.poll_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.ratelog(f"poll-{self.section}", f"sensor {self.section}: poll failed: {self.last_error}")
            return
        self.polls += 1
        if events:
            accepted = self.pipeline.publish(events)
            self.events += accepted
            if accepted < len(events):
                self.queue_dropped += len(events) - accepted
                self.ratelog("queue-full", f"pipeline queue full: dropped {len(events) - accepted} "
                             f"{self.section} events (counted as lost at 'queue')")

    def can_hand_over(self) -> bool:
        return self.state == "on" and bool(getattr(self.sensor, "supports_handover", False))

    def _pause(self, timeout: float = 3.0) -> None:
        """Stop polling (the sensor stays attached and counting)."""
        self._final_poll = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def hand_over(self) -> None:
        """Reload, after every new runner started: the predecessor stops counting
        between two drops, its last counts are polled, then it may be detached."""
        old, self.predecessor = self.predecessor, None
        if old is None:
            return
        old._pause()
        old.sensor.retire()
        old._poll_once()  # its swap waits out a program still running: nothing after this
        self.sensor.release_predecessor()

    def cancel_handover(self) -> None:
        """The reload failed after this runner attached: the predecessor counts on as before."""
        old, self.predecessor = self.predecessor, None
        if old is not None and old.sensor is not None:
            old.sensor.disarm_handover()

    def stop(self, timeout: float = 3.0) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout)
        if self.sensor is not None:
            self._final_losses = self.losses()
            try:
                self.sensor.detach()
            except Exception as exc:
                log(f"sensor {self.section}: detach failed: {type(exc).__name__}: {exc}", 3)
            self.sensor = None
        if self.state == "on":
            self.state = "stopped"

    def losses(self) -> dict[str, int]:
        if self.sensor is None:
            return dict(self._final_losses)
        try:
            return dict(self.sensor.losses())
        except Exception:
            return dict(self._final_losses)

    MAX_NOTES = 10

    def note(self, message: str) -> None:
        """A sensor's remark on how it runs: logged, kept for the heartbeat and agent-stopped."""
        self.notes_total += 1
        if message not in self.notes:
            self.notes = (self.notes + [message])[-self.MAX_NOTES:]
        log(f"sensor {self.section}: {message}", 5)

    def status(self) -> dict:
        out = {"name": self.section, "state": self.state, "attach_path": self.attach_path}
        if self.reason:
            out["reason"] = self.reason
        if self.notes:
            out["notes"] = list(self.notes)
            out["notes_total"] = self.notes_total
        if self.state in ("on", "stopped"):
            out.update(polls=self.polls, poll_errors=self.poll_errors, events=self.events,
                       lost=self.losses(), queue_lost=self.queue_dropped)
            if self.last_error:
                out["last_error"] = self.last_error
        return out


class Daemon:
    def __init__(self, config: config_mod.AgentConfig, config_path: str | None):
        self.config = config
        self.config_path = config_path
        self.ratelog = RateLimitedLog()
        self.pipeline: Pipeline | None = None
        self.runners: list[SensorRunner] = []
        self._retired_kernel_losses: dict[str, int] = {}
        self.start_time = time.time()
        self._process = psutil.Process()
        self._cpu_mark = (time.monotonic(), self._cpu_seconds())
        self.reload_ok = True
        self._started = threading.Event()  # agent-started is queued: sensors may publish
        self.reloads = 0
        self.enricher = None  # netagent.enrich.stage.Enricher, built at start
        self._wake_r = self._wake_w = None
        self._old_handlers: dict = {}
        self._old_wakeup_fd = -1

    # -- building blocks ------------------------------------------------------------
    def _start_sinks(self, tables: list[dict], source: str, keep: dict | None = None) -> list:
        """Start the sinks in `tables`, reusing those in `keep` (cfg key -> sink).
        If one fails to start, the ones started here are closed and ConfigError raised."""
        keep = keep or {}
        started, out = [], []
        for i, table in enumerate(tables, start=1):
            key = _sink_key(table)
            if key in keep:
                out.append(keep[key])
                continue
            try:
                sink = sink_class(table["type"]).from_config(table)
                sink.observe_agent(self.snapshot)
                sink.start()
            except SchemaError as exc:
                for s in started:
                    s.close(0.5)
                raise ConfigError(exc.message, path=source, key=f"sinks[{i}].{exc.key}") from None
            except ConfigError:
                for s in started:
                    s.close(0.5)
                raise
            except Exception as exc:
                for s in started:
                    s.close(0.5)
                raise ConfigError(f"cannot start {table['type']} sink: {type(exc).__name__}: {exc}", path=source,
                                  key=f"sinks[{i}]") from None
            sink.config_key = key
            started.append(sink)
            out.append(sink)
        return out

    def _attach_sensors(self, cfg: config_mod.AgentConfig, keep: dict | None = None) -> list[SensorRunner]:
        keep = keep or {}
        # a section is either kept as it runs or started anew (then replacing this one)
        running = {r.section: r for r in self.runners}
        runners = []
        try:
            for module in cfg.sensor_modules:
                table = cfg.sensors.get(module.section, {})
                key = (module.path, orjson.dumps(table, option=orjson.OPT_SORT_KEYS))
                if key in keep:
                    runners.append(keep[key])
                    continue
                runner = SensorRunner(module.section, module, table, self.pipeline, self.ratelog)
                runner.config_key = key
                runner.gate = self._started
                # A changed sensor: the new one attaches before the old one detaches
                # (no gap); sensors that can hand over exactly also never count a
                # drop twice during the overlap (SensorRunner.hand_over).
                old = running.get(module.section)
                runner.start(predecessor=old if old is not None and old.can_hand_over() else None)
                runners.append(runner)
                if runner.state == "on":
                    log(f"sensor {module.section}: on ({runner.attach_path})")
                elif runner.state == "disabled":
                    log(f"sensor {module.section}: disabled in the configuration")
                else:
                    log(f"sensor {module.section}: off: {runner.reason}", 4)
        except ConfigError as exc:
            for r in runners:
                if r not in keep.values():
                    r.cancel_handover()
                    r.stop()
            raise ConfigError(str(exc).split(": ", 1)[-1] if exc.key else str(exc), path=cfg.source,
                              key=exc.key) from None
        return runners

    # -- counters ---------------------------------------------------------------------
    def _cpu_seconds(self) -> float:
        t = self._process.cpu_times()
        return t.user + t.system

    def losses(self) -> dict[str, int]:
        lost = self.pipeline.losses() if self.pipeline else {p: 0 for p in PLACES}
        for runner in list(self.runners):
            for place, n in runner.losses().items():
                lost[place] = lost.get(place, 0) + n
        for place, n in self._retired_kernel_losses.items():
            lost[place] = lost.get(place, 0) + n
        return lost

    def snapshot(self) -> dict:
        snap = self.pipeline.snapshot() if self.pipeline else {}
        snap["lost"] = self.losses()
        snap["sensors"] = [r.status() for r in list(self.runners)]
        snap["config_reload_ok"] = self.reload_ok
        snap["enrich"] = self.enricher.status() if self.enricher else {}
        snap["start_time"] = self.start_time
        return snap

    # -- the agent's own events --------------------------------------------------------
    def _agent_event(self, action: str, *, kind: str = "event", type_: list[str], **agent_fields) -> dict:
        return new_event(
            dataset=AGENT_DATASET, action=action, kind=kind, category=["process"], type=type_,
            process={"pid": os.getpid(), "uptime": int(time.time() - self.start_time)},
            netagent={"agent": agent_fields},
        )

    def _emit(self, event: dict) -> None:
        if not self.pipeline.publish_internal(event):
            self.ratelog("internal-lost", f"queue full: lost the agent's own {event['event']['action']} event", 3)

    def heartbeat_event(self) -> dict:
        snap = self.snapshot()
        now, cpu = time.monotonic(), self._cpu_seconds()
        mark_t, mark_cpu = self._cpu_mark
        self._cpu_mark = (now, cpu)
        cpu_pct = 100.0 * (cpu - mark_cpu) / (now - mark_t) if now > mark_t else 0.0
        try:
            rss = self._process.memory_info().rss
        except psutil.Error:
            rss = None
        return self._agent_event(
            "heartbeat", kind="metric", type_=["info"],
            events_emitted=snap["emitted"], last_sequence=snap["last_sequence"], events_by_dataset=snap["by_dataset"],
            lost=snap["lost"], lost_total=sum(snap["lost"].values()),
            processing=snap["processing"],
            queue={"depth": snap["queue_depth"], "capacity": snap["queue_capacity"]},
            sensors=snap["sensors"], sinks=snap["sinks"], watchdog=WATCHDOG.status(),
            enrich=snap["enrich"], enrich_failed_total=sum(snap["enrich"].get("enrich_failed", {}).values()),
            rss_bytes=rss, cpu_seconds=round(cpu, 3),
            cpu_percent=round(cpu_pct, 2), config=self.config.source,
        )

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        tune_allocator()  # before any thread: each would get a malloc arena of its own
        cfg = self.config
        sinks = self._start_sinks(cfg.sinks, cfg.source)
        from netagent.enrich.stage import Enricher

        # names (pods, interfaces) before the correlator and the sinks see an event
        self.enricher = Enricher.from_config(cfg.kubernetes, log=lambda message: log(message, 4))
        log(self.enricher.start())
        self.pipeline = Pipeline(sinks, capacity=cfg.agent["queue_events"],
                                 processors=[self.enricher] + _processors(cfg))
        self.pipeline.start()
        try:
            self.runners = self._attach_sensors(cfg)
            self._require_some_sensor()
        except BaseException:
            self._abort()
            raise
        on = [r for r in self.runners if r.state == "on"]
        self._emit(self._agent_event(
            "agent-started", type_=["start"], version=__version__, config=cfg.source,
            sensors=[r.status() for r in self.runners], sinks=[{"name": s.name, "type": s.TYPE} for s in sinks],
        ))
        self._started.set()
        status = f"{len(on)} sensor(s) on: {', '.join(f'{r.section} ({r.attach_path})' for r in on) or 'none'}"
        log(f"started (pid {os.getpid()}, config {cfg.source}): {status}; sinks: "
            f"{', '.join(s.name for s in sinks)}")
        sdnotify.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")
        release_startup_memory()  # after READY: attached is what start-up time means (issue 12)

    def _require_some_sensor(self) -> None:
        enabled = [r for r in self.runners if r.state != "disabled"]
        if not enabled:
            log("every sensor is disabled in the configuration: only heartbeats will be emitted", 4)
            return
        if any(r.state == "on" for r in enabled):
            return
        why = "; ".join(f"{r.section}: {r.reason}" for r in enabled)
        if all(getattr(r, "kind", None) is InsufficientPrivilege for r in enabled):
            raise InsufficientPrivilege(f"no sensor could attach: {why}")
        raise ProbeUnavailable(f"no sensor could attach: {why}")

    def _abort(self) -> None:
        for r in self.runners:
            r.stop()
        if self.pipeline:
            self.pipeline.stop(0.5)
            for s in self.pipeline.sinks:
                s.close(0.5)
        if self.enricher:
            self.enricher.stop()

    def stop(self, why: str) -> dict:
        """Detach, report totals, flush sinks within shutdown_timeout. Returns final losses."""
        timeout = self.config.agent["shutdown_timeout"]
        deadline = time.monotonic() + timeout
        sdnotify.notify("STOPPING=1", f"STATUS=stopping ({why})")
        for r in self.runners:
            r.stop(timeout=max(0.5, min(3.0, deadline - time.monotonic())))
        self.pipeline.drain(max(0.1, (deadline - time.monotonic()) / 2))
        snap = self.snapshot()
        self._emit(self._agent_event(
            "agent-stopped", type_=["end"], reason=why, events_emitted=snap["emitted"] + 1,
            events_by_dataset=snap["by_dataset"], lost=snap["lost"], lost_total=sum(snap["lost"].values()),
            processing=snap["processing"],
            sensors=snap["sensors"], watchdog=WATCHDOG.status(), enrich=snap["enrich"],
            enrich_failed_total=sum(snap["enrich"].get("enrich_failed", {}).values()),
            uptime_seconds=round(time.time() - self.start_time, 3),
        ))
        self.pipeline.stop(max(0.1, deadline - time.monotonic()))
        self._close_sinks(self.pipeline.sinks, max(0.2, deadline - time.monotonic()))
        self.enricher.stop()
        final = self.losses()
        log(f"stopped ({why}): {self.pipeline.emitted} events emitted, lost: "
            + ", ".join(f"{p} {n}" for p, n in final.items()))
        return final

    def _close_sinks(self, sinks: list, timeout: float) -> None:
        """Close in parallel, so the bound is `timeout` overall, not per sink."""
        threads = [threading.Thread(target=s.close, args=(timeout,), name=f"close-{s.name}", daemon=True)
                   for s in sinks]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout + 2.5  # close() itself may add a short grace
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # -- reload ------------------------------------------------------------------------
    def reload(self) -> bool:
        self.reloads += 1
        sdnotify.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        try:
            ok = self._reload()
        finally:
            for s in self.pipeline.sinks:
                s.reopen()
            sdnotify.notify("READY=1")
        self.reload_ok = ok
        return ok

    def _reload(self) -> bool:
        path = self.config_path or (self.config.source if self.config.source != config_mod.EMBEDDED else None)
        try:
            new = config_mod.load(path)
        except ConfigError as exc:
            log(f"reload rejected, keeping the running configuration: {exc}", 3)
            self._emit(self._agent_event("config-reload-failed", type_=["change"], error=str(exc),
                                         config=self.config.source))
            return False
        old_sinks = {getattr(s, "config_key", None): s for s in self.pipeline.sinks}
        new_keys = {_sink_key(t) for t in new.sinks}
        # A sink whose settings changed but whose port stays (prometheus `listen`)
        # must let go of the port before its successor can bind it.
        listens = {t.get("listen") for t in new.sinks if t.get("listen")}
        handover = [s for k, s in old_sinks.items() if k not in new_keys and getattr(s, "listen", None) in listens]
        if handover:
            self.pipeline.set_sinks([s for s in self.pipeline.sinks if s not in handover])
            self._close_sinks(handover, 1.0)
        try:
            sinks = self._start_sinks(new.sinks, new.source, keep=old_sinks)
        except ConfigError as exc:
            if handover:  # put the old ones back as they were configured
                for old in handover:
                    self.pipeline.retire(old)
                try:
                    restored = self._start_sinks([orjson.loads(s.config_key) for s in handover], self.config.source)
                    self.pipeline.set_sinks(self.pipeline.sinks + restored)
                except ConfigError as again:
                    log(f"could not restore the previous sink: {again}", 3)
            log(f"reload rejected, keeping the running configuration: {exc}", 3)
            self._emit(self._agent_event("config-reload-failed", type_=["change"], error=str(exc),
                                         config=new.source))
            return False
        for s in handover:
            self.pipeline.retire(s)
        removed = [s for s in self.pipeline.sinks if s not in sinks]
        self.pipeline.set_sinks(sinks)
        self._close_sinks(removed, new.agent["shutdown_timeout"])
        for s in removed:
            self.pipeline.retire(s)
        removed += handover

        old_runners = {getattr(r, "config_key", None): r for r in self.runners}
        ok = True
        try:
            runners = self._attach_sensors(new, keep=old_runners)
        except ConfigError as exc:
            # sinks already moved to the new file; sensors keep running as they were
            log(f"reload: sensors keep their running configuration: {exc}", 3)
            runners, ok = self.runners, False
        for r in runners:
            r.hand_over()
        for r in self.runners:
            if r not in runners:
                r.stop()
                for place, n in r.losses().items():
                    self._retired_kernel_losses[place] = self._retired_kernel_losses.get(place, 0) + n
        self.runners = runners
        release_startup_memory()
        self.pipeline.queue.capacity = new.agent["queue_events"]
        if new.findings != self.config.findings:
            self.pipeline.processors = [self.enricher] + _processors(new)
        if new.kubernetes != self.config.kubernetes:
            log("reload: [kubernetes] changes take effect at the next restart", 4)
        self.config = new
        changed = {"sinks_started": [s.name for s in sinks if s not in old_sinks.values()],
                   "sinks_stopped": [s.name for s in removed],
                   "sensors_restarted": [r.section for r in runners if r not in old_runners.values()]}
        log(f"configuration reloaded from {new.source}: " + "; ".join(f"{k} {v}" for k, v in changed.items() if v)
            if any(changed.values()) else f"configuration reloaded from {new.source}: no changes")
        self._emit(self._agent_event("config-reloaded", type_=["change"], config=new.source,
                                     sensors=[r.status() for r in runners], **changed))
        return ok

    # -- main loop ---------------------------------------------------------------------
    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            # the handler does nothing: the wakeup fd carries the signal number
            self._old_handlers[sig] = signal.signal(sig, lambda *_: None)

    def _restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)

    def _wait_signal(self, timeout: float) -> list[int]:
        ready, _, _ = select.select([self._wake_r], [], [], max(0.0, timeout))
        if not ready:
            return []
        try:
            return list(os.read(self._wake_r, 64))
        except BlockingIOError:
            return []

    def run(self) -> int:
        self._install_signals()  # before start: a SIGTERM during attach still stops cleanly
        try:
            self.start()
            why = self._loop()
            self.stop(why)
            return 0
        finally:
            self._restore_signals()

    def _loop(self) -> str:
        next_hb = time.monotonic() + self.config.agent["heartbeat"]
        wd = sdnotify.watchdog_interval()
        next_wd = time.monotonic() + wd if wd else None
        while True:
            now = time.monotonic()
            due = min(t for t in (next_hb, next_wd) if t is not None)
            for sig in self._wait_signal(due - now):
                if sig in (signal.SIGTERM, signal.SIGINT):
                    return signal.Signals(sig).name
                if sig == signal.SIGHUP:
                    self.reload()
                    next_hb = min(next_hb, time.monotonic() + self.config.agent["heartbeat"])
            now = time.monotonic()
            if now >= next_hb:
                self._emit(self.heartbeat_event())
                next_hb = now + self.config.agent["heartbeat"]
            if next_wd is not None and now >= next_wd:
                sdnotify.notify("WATCHDOG=1")
                next_wd = now + wd


def _processors(cfg: config_mod.AgentConfig) -> list:
    """The correlator turns the sensors' events into findings ("the cause is X")."""
    from netagent.findings.correlator import Correlator

    return [Correlator.from_config(cfg.findings)] if cfg.findings.get("enabled", True) else []


def _sink_key(table: dict) -> bytes:
    return orjson.dumps(table, option=orjson.OPT_SORT_KEYS)
