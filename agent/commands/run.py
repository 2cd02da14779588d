"""`netagent run`: the always-on agent (what the systemd unit starts)."""

import click

from netagent import config as config_mod
from netagent.commands.options import config_option


@click.command()
@config_option(extra_help="The embedded default: every sensor that can run, JSON on stdout.")
def run(config_path):
    """Run the agent: sensors -> one bounded queue -> stdout/file/syslog/Prometheus sinks.

    \b
    SIGTERM/SIGINT  detach, flush within [agent] shutdown_timeout, exit 0
    SIGHUP          reload the configuration (a bad one is rejected, the
                    running one stays) and reopen files
    Exit codes: 0 stopped by a signal, 69 no sensor could attach,
    77 missing privileges, 78 invalid configuration (systemd does not restart).
    """
    from netagent.daemon import Daemon

    cfg = config_mod.load(config_path)  # ConfigError (78) before anything is attached
    return Daemon(cfg, config_path).run()
