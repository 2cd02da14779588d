"""`--config`: one option, one help text, for every command that reads netagent.toml.

`run` and `doctor` take the path and load the whole file themselves. The
one-off commands (trace drops, trace conntrack, probe mtu, probe dns, check)
use only its [kubernetes] section, for the enrichment stage the daemon uses
too; their own flags say what to trace or probe. They get that section
loaded and validated by the same loader before the command body runs, so a
bad file exits 78 with one line naming the key, before anything is attached.
"""

import click

from netagent import config as config_mod

CONFIG_HELP = (f"TOML configuration (default: {config_mod.DEFAULT_PATH} if it exists, "
               "else the embedded default).")


def config_option(func=None, *, short: bool = True, extra_help: str = "", kubernetes: bool = False):
    """--config PATH (and -c unless the command uses -c for something else).

    kubernetes=False: the command receives `config_path` (None for the default).
    kubernetes=True: it receives `kubernetes`, the file's validated [kubernetes] table.
    """
    def load_kubernetes(ctx, param, value):
        return config_mod.load(value).kubernetes  # ConfigError: exit 78, one line naming the key

    def decorate(f):
        names = ("--config", "-c") if short else ("--config",)
        return click.option(
            *names, "kubernetes" if kubernetes else "config_path",
            type=click.Path(dir_okay=False), default=None, metavar="PATH",
            callback=load_kubernetes if kubernetes else None,
            help=f"{CONFIG_HELP} {extra_help}".strip(),
        )(f)

    return decorate(func) if func is not None else decorate


KUBERNETES_HELP = ("Only its [kubernetes] section is used: the container runtime socket, node name and "
                   "API server that name pods, as `netagent run` does.")


def kubernetes_config_option(func=None, *, short: bool = True):
    """--config for a one-off command: pod attribution as `netagent run` does it, from the same file."""
    return config_option(func, short=short, kubernetes=True, extra_help=KUBERNETES_HELP)
