"""`netagent probe mtu TARGET`: the real path MTU, and PMTU black holes.

Exit codes: 0 the path was characterised (ok, icmp, local); 1 a finding
(black hole, or an overlay MTU above what its underlay carries); 2 bad
usage or target; 69 target unreachable; 77 not root / no CAP_NET_RAW.
"""

import click

from netagent.commands.options import kubernetes_config_option
from netagent.enrich.cli import command_enricher, pod_netns, pod_option
from netagent.errors import EXIT_FINDINGS, ProbeUnavailable
from netagent.output import DurationParam, JsonLineEmitter, note, output_option, resolve_output



@click.command()
@click.argument("target")
@click.option("--netns", default="", help="Probe from this namespace: name under /run/netns, a path, or pid:N.")
@pod_option
@kubernetes_config_option
@click.option("--proto", type=click.Choice(["icmp", "udp", "tcp"]), default="icmp", show_default=True,
              help="Probe with ICMP echo, UDP to a closed port, or TCP SYN (firewalls often pass only one).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Destination port for udp (default 33434) or tcp (default 443).")
@click.option("--min", "min_size", type=click.IntRange(28, 65535), default=None,
              help="Smallest probe in bytes, IP header included (default 552 for IPv4, 1280 for IPv6).")
@click.option("--max", "max_size", type=click.IntRange(28, 65535), default=None,
              help="Largest probe in bytes (default: the egress interface MTU).")
@click.option("--timeout", type=DurationParam(), default="1s", show_default=True,
              help="Longest wait for one answer; after the first answer waits adapt to the round trip.")
@click.option("--retries", type=click.IntRange(0, 10), default=2, show_default=True,
              help="Re-sends of a lost probe before its size is called lost.")
@click.option("-4", "family", flag_value=4, default=None, help="Use the target name's IPv4 address.")
@click.option("-6", "family", flag_value=6, help="Use the target name's IPv6 address.")
@click.option("--verbose", "-v", is_flag=True, help="Table view: also list every probe.")
@output_option
def mtu(target, netns, pod, kubernetes, proto, port, min_size, max_size, timeout, retries, family, verbose, output):
    """Find the path MTU to TARGET with DF probes, and say why it is what it is.

    Status: ok (the egress MTU passes), icmp (a router announced a smaller
    MTU), blackhole (large probes vanish without ICMP), local (our own kernel
    or tunnel refuses), unreachable. Tunnels on the egress are checked
    against their underlay (VXLAN, Geneve, IPIP, GRE, WireGuard overhead).
    """
    from netagent import netns as netns_mod
    from netagent.mtu.target import check_syntax
    from netagent.privileges import require_caps

    fmt = resolve_output(output)
    netns, _pod = pod_netns(pod, netns, runtime_socket=kubernetes["runtime_socket"])
    check_syntax(target)
    ns = netns_mod.resolve(netns)
    caps = ["CAP_NET_RAW"] + (["CAP_SYS_ADMIN"] if ns.inode != netns_mod.current().inode else [])
    require_caps(caps, "send raw probe packets" + (" from another namespace" if len(caps) > 1 else ""))
    # Only now what imports scapy: for a user without the capabilities, scapy's import can
    # fail on its per-user cache (a ~/.cache/scapy file it cannot read, which it then tries
    # to delete), and that internal error (70) hid the one-line "needs CAP_NET_RAW" (77).
    from netagent.mtu.probe import MtuOptions, probe_path
    from netagent.mtu.report import is_finding, render, to_event

    opts = MtuOptions(proto=proto, port=port, min_size=min_size, max_size=max_size, timeout=timeout,
                      retries=retries, family=family)
    opts.validate()

    report = probe_path(target, ns, opts)
    enrich = command_enricher(note, kubernetes)
    try:
        event = enrich(to_event(report))
    finally:
        enrich.stop()
    if fmt == "json":
        JsonLineEmitter().emit(event)
    else:
        click.echo(render(event, verbose=verbose))
    status = report.result.status
    if status == "unreachable":
        # the event is on stdout already; the error line and exit code tell scripts
        raise ProbeUnavailable(event["message"])
    if is_finding(report):
        return EXIT_FINDINGS
    return 0

