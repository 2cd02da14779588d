"""`netagent doctor`: can the sensors run on this node, and by which path?"""

import importlib
import json
import sys

import click

from netagent.errors import EXIT_OK, EXIT_UNAVAILABLE
from netagent.output import output_option, resolve_output
from netagent.privileges import missing_for_bpf
from netagent.sensor import SensorStatus


def sensor_statuses() -> list[SensorStatus]:
    """Each registered sensor's own support check (the same one `run` uses)."""
    modules = ["netagent.probes.drops"]
    try:
        from netagent.registry import SENSOR_MODULES

        modules = list(dict.fromkeys(modules + list(SENSOR_MODULES)))
    except ImportError:
        pass
    out = []
    for name in modules:
        try:
            module = importlib.import_module(name)
            defaults = {k: v[1] for k, v in getattr(module, "CONFIG_SCHEMA", {}).items()}
            sensor = module.from_config(defaults)
            status = sensor.check()
        except Exception as exc:  # a broken sensor must not hide the others
            status = SensorStatus(name.rsplit(".", 1)[-1], False, None, f"{type(exc).__name__}: {exc}")
        out.append(status)
    return out


def _drop_status_with_privileges(statuses: list[SensorStatus]) -> SensorStatus:
    drops = next(s for s in statuses if s.name == "drops")
    missing = missing_for_bpf()
    if drops.can_run and missing:
        drops.can_run = False
        drops.reason = f"needs root or {' + '.join(missing)}"
    return drops


@click.command()
@output_option
def doctor(output):
    """Report kernel features, privileges and each sensor's attach path."""
    from netagent.nodefacts import node_facts

    facts = node_facts()
    statuses = sensor_statuses()
    drops = _drop_status_with_privileges(statuses)
    report = {**facts, "sensors": [s.as_dict() for s in statuses]}
    if resolve_output(output) == "json":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        click.echo(_render(report))
    sys.exit(EXIT_OK if drops.can_run else EXIT_UNAVAILABLE)


def _yes(v):
    return "yes" if v else ("unknown" if v is None else "no")


def _render(r: dict) -> str:
    caps = ", ".join(r["privileges"]["capabilities"]) or "none"
    lines = [
        f"kernel           {r['kernel']}",
        f"BTF              {_yes(r['btf'])} (vmlinux)",
        f"module BTF       {_yes(r['module_btf']['available'])} ({r['module_btf']['detail']})",
        f"tracefs          {r['tracefs'] or 'not mounted (mounted on first attach)'}",
        f"kernel headers   {r['kernel_headers']['detail']}",
        f"kprobes          {_yes(r['kprobes']['available'])} ({r['kprobes']['detail']})",
        f"fentry           {_yes(r['fentry']['available'])} ({r['fentry']['detail']})",
        f"lockdown         {r['lockdown']}",
        f"privileges       euid {r['privileges']['euid']}; capabilities: {caps}",
        f"BCC              {r['bcc_version'] or 'missing: apt-get install python3-bpfcc'}",
        "",
        "sensors:",
    ]
    for s in r["sensors"]:
        waiting = (s.get("details") or {}).get("state")  # e.g. "waiting for nf_conntrack"
        state = waiting or (f"via {s['attach_path']}" if s["can_run"] else "cannot run")
        lines.append(f"  {s['name']:<12} {state}")
        if s.get("reason"):
            lines.append(f"  {'':<12} {s['reason']}")
        for k, v in (s.get("details") or {}).items():
            lines.append(f"  {'':<12} {k}: {v}")
    return "\n".join(lines)
