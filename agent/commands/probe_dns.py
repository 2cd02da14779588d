"""`netagent probe dns NAME`: what the resolver of a namespace does for NAME, measured."""

import click

from netagent import netns as netns_mod
from netagent.dns import report
from netagent.dns.probe import MODES, run_probe
from netagent.dns.settings import prepare, unavailable_reason
from netagent.commands.options import kubernetes_config_option
from netagent.enrich.cli import command_enricher, pod_netns, pod_option, pod_resolv_conf
from netagent.errors import ProbeUnavailable, UsageError
from netagent.output import JsonLineEmitter, note, output_option, render_table, resolve_output
from netagent.timefmt import parse_duration


def _duration(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _qtype(ctx, param, value):
    if value is None:
        return None
    for choice in ("A", "AAAA", "both"):
        if value.lower() == choice.lower():
            return choice
    raise click.BadParameter(f"{value!r} is not one of 'A', 'AAAA', 'both'")


def _interval(ctx, param, value):
    if value in ("0", "0s", "0ms"):
        return 0.0
    return _duration(ctx, param, value)


@click.command("dns")
@click.argument("name")
@click.option("--server", "servers", multiple=True, metavar="IP[:PORT]",
              help="Server to query (repeatable). Default: the nameservers of the namespace's resolv.conf.")
@click.option("--netns", default=None, metavar="NAME|PATH|pid:N",
              help="Probe from inside this network namespace (needs root or CAP_SYS_ADMIN).")
@pod_option
@kubernetes_config_option(short=False)  # -c is --count here
@click.option("--resolv-conf", "resolv_conf", default=None, metavar="PATH",
              help="Read this file instead of the namespace's resolv.conf.")
@click.option("--type", "qtype", default=None, callback=_qtype, metavar="A|AAAA|both",
              help="Query type. Default: both, as getaddrinfo asks (A only with options no-aaaa).")
@click.option("--count", "-c", type=click.IntRange(1, 1_000_000), default=5, show_default=True,
              help="Rounds: each round walks the search expansion once.")
@click.option("--interval", "-i", default="200ms", show_default=True, callback=_interval, metavar="DURATION",
              help="Time from the start of one round to the start of the next.")
@click.option("--timeout", "-t", default=None, callback=_duration, metavar="DURATION",
              help="How long each query waits for its answer. Default: resolv.conf's timeout (glibc: 5s).")
@click.option("--mode", type=click.Choice(MODES), default=None,
              help="How A and AAAA are sent. Default: sequential with options single-request, "
                   "else parallel-same-socket (glibc's default).")
@click.option("--tcp/--udp", "tcp", default=None,
              help="Query over TCP (default: UDP, or TCP with options use-vc). "
                   "Truncated UDP answers are always retried over TCP.")
@click.option("--all-candidates", is_flag=True,
              help="Query every name of the search expansion, not only those the resolver would reach.")
@output_option
def dns(name, servers, netns, pod, kubernetes, resolv_conf, qtype, count, interval, timeout, mode, tcp, all_candidates, output):
    """Query NAME the way the namespace's stub resolver would, and measure it.

    Applies the search list and ndots of the namespace's resolv.conf exactly
    as glibc does, queries the names in the resolver's order, and reports per
    name and type: latency (min/p50/p95/max), answers, rcode, timeouts,
    truncation and TCP retries, invalid packets, and the A/AAAA race
    signature (one answered, its twin lost, same source port).
    Exit codes: 0 done, 2 bad usage, 69 no server answered, 77 no permission.
    """
    fmt = resolve_output(output)
    netns, pod_info = pod_netns(pod, netns, runtime_socket=kubernetes["runtime_socket"])
    if pod_info is not None:
        if resolv_conf:
            raise UsageError("--pod already selects the pod's own resolv.conf: leave out --resolv-conf")
        # the pod's resolver: its own resolv.conf (kubelet's search list and ndots), not the node's
        resolv_conf = pod_resolv_conf(pod_info)
    prepared = prepare(
        name,
        servers=servers,
        netns=netns,
        resolv_conf=resolv_conf,
        qtype=qtype,
        count=count,
        interval=interval,
        timeout=timeout,
        mode=mode,
        tcp=tcp,
        all_candidates=all_candidates,
    )
    for line in prepared.notes:
        note(f"netagent: note: {line}")
    try:
        result = netns_mod.run_in(prepared.netns, run_probe, prepared.settings)
    except OSError as exc:
        raise ProbeUnavailable(f"DNS probe failed: {exc.strerror or exc}") from None
    if fmt == "json":
        emitter = JsonLineEmitter()
        enrich = command_enricher(note, kubernetes)
        try:
            for event in report.events(result, prepared.netns.name):
                emitter.emit(enrich(event))
        finally:
            enrich.stop()
    else:
        for line in report.summary_lines(result):
            click.echo(line)
        click.echo(render_table(report.table_rows(result), report.columns(result)))
    reason = unavailable_reason(result)
    if reason:
        raise ProbeUnavailable(reason)

