"""`netagent run`: the always-on agent (what the systemd unit starts)."""

import click

from netagent import config as config_mod


@click.command()
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), default=None,
              help=f"TOML configuration (default: {config_mod.DEFAULT_PATH} if it exists, "
                   "else the embedded default: every sensor that can run, JSON on stdout).")
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
