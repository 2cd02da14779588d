"""`netagent doctor`: can the sensors run on this node, and by which path?

It reads the same configuration as `netagent run` (--config, default
/etc/netagent/netagent.toml if present, else the embedded default) and asks
the same question the daemon asks before attaching (registry.plan_sensor),
so a sensor `run` would start is reported as runnable and one it would skip
is reported with the same reason.
"""

import json
import sys

import click

from netagent import config as config_mod
from netagent.commands.options import config_option
from netagent.errors import EXIT_OK, EXIT_UNAVAILABLE
from netagent.output import output_option, resolve_output
from netagent.privileges import missing_for_bpf
from netagent.registry import SensorConfigRejected, plan_sensor
from netagent.sensor import SensorStatus

DISABLED = "disabled in the configuration"


def sensor_statuses(cfg: config_mod.AgentConfig) -> list[SensorStatus]:
    """Each configured sensor as `run` would find it: disabled, off (why) or its attach path."""
    out = []
    for module in cfg.sensor_modules:
        try:
            plan = plan_sensor(module, cfg.sensors.get(module.section, {}))
        except SensorConfigRejected as exc:
            out.append(SensorStatus(module.section, False, None,
                                    f"{cfg.source}: sensors.{module.section}: {exc} (`run` exits 78)"))
            continue
        if plan.state == "disabled":
            out.append(SensorStatus(module.section, False, None, f"enabled = false in {cfg.source}",
                                    {"state": DISABLED}))
        else:
            out.append(plan.status or SensorStatus(module.section, False, None, plan.reason))
    return out


def _drop_status_with_privileges(statuses: list[SensorStatus]) -> None:
    drops = next((s for s in statuses if s.name == "drops"), None)
    missing = missing_for_bpf()
    if drops is not None and drops.can_run and missing:
        drops.can_run = False
        drops.reason = f"needs root or {' + '.join(missing)}"


def exit_code(statuses: list[SensorStatus]) -> int:
    """As `run` decides: fine if a configured sensor can run, or if every one is disabled."""
    enabled = [s for s in statuses if (s.details or {}).get("state") != DISABLED]
    return EXIT_OK if not enabled or any(s.can_run for s in enabled) else EXIT_UNAVAILABLE


@click.command()
@config_option(extra_help="The same file `run` reads.")
@output_option
def doctor(config_path, output):
    """Report kernel features, privileges and each configured sensor's attach path.

    Exit 0 when `netagent run` with this configuration would attach at least
    one sensor (or every sensor is disabled), 69 when none could run, 78 when
    the configuration is invalid.
    """
    from netagent.nodefacts import node_facts

    cfg = config_mod.load(config_path)  # ConfigError: exit 78, one line naming the key
    facts = {**node_facts(), "architecture": architecture(), "config": cfg.source}
    statuses = sensor_statuses(cfg)
    _drop_status_with_privileges(statuses)
    from netagent.enrich.stage import attribution_report

    from netagent.enrich.apiserver import apiserver_report

    report = {**facts, "sensors": [s.as_dict() for s in statuses], "pod_attribution": attribution_report(),
              "apiserver": apiserver_report(cfg.kubernetes)}
    if resolve_output(output) == "json":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        click.echo(_render(report))
    sys.exit(exit_code(statuses))


def architecture() -> dict:
    """What the BPF code needs to know per architecture (agent/bpfsys.py), or why it refuses."""
    import platform

    from netagent.bpfsys import current_arch
    from netagent.errors import ProbeUnavailable

    try:
        arch = current_arch()
    except ProbeUnavailable as exc:
        return {"machine": platform.machine(), "supported": False, "detail": f"refused: {exc}"}
    where = {"stack": "the word at the stack pointer", "lr": "the link register"}.get(arch.kprobe_return)
    ret = f"kprobe return address from {where}" if where else "kprobe drop locations not reported"
    return {"machine": arch.name, "supported": True, "bpf_syscall": arch.sys_bpf,
            "kprobe_return": arch.kprobe_return or None, "detail": f"{arch.name}: bpf(2) is syscall {arch.sys_bpf}; {ret}"}


def _yes(v):
    return "yes" if v else ("unknown" if v is None else "no")


def _render(r: dict) -> str:
    caps = ", ".join(r["privileges"]["capabilities"]) or "none"
    lines = [
        f"kernel           {r['kernel']}",
        f"architecture     {r['architecture']['detail']}",
        f"BTF              {_yes(r['btf'])} (vmlinux)",
        f"module BTF       {_yes(r['module_btf']['available'])} ({r['module_btf']['detail']})",
        f"tracefs          {r['tracefs'] or 'not mounted (mounted on first attach)'}",
        f"kernel headers   {r['kernel_headers']['detail']}",
        f"kprobes          {_yes(r['kprobes']['available'])} ({r['kprobes']['detail']})",
        f"pod attribution  {_yes(r['pod_attribution']['available'])} ({r['pod_attribution']['detail']})",
        f"API server       {_yes(r['apiserver']['available']) if r['apiserver']['enabled'] else 'off'} "
        f"({r['apiserver']['detail']})",
        f"fentry           {_yes(r['fentry']['available'])} ({r['fentry']['detail']})",
        f"lockdown         {r['lockdown']}",
        f"privileges       euid {r['privileges']['euid']}; capabilities: {caps}",
        f"BCC              {r['bcc_version'] or 'missing: apt-get install python3-bpfcc'}",
        "",
        f"sensors (configuration {r['config']}):",
    ]
    for s in r["sensors"]:
        waiting = (s.get("details") or {}).get("state")  # e.g. "waiting for nf_conntrack"
        state = waiting or (f"via {s['attach_path']}" if s["can_run"] else "cannot run")
        lines.append(f"  {s['name']:<12} {state}")
        if s.get("reason"):
            lines.append(f"  {'':<12} {s['reason']}")
        for k, v in (s.get("details") or {}).items():
            if k == "state":
                continue  # already the status line
            lines.append(f"  {'':<12} {k}: {v}")
    return "\n".join(lines)
