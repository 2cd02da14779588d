"""The `netagent` command line: verb_noun commands, loaded lazily.

Each command lives in its own module under netagent.commands and is
imported only when invoked, so `netagent probe dns` does not pay for BCC
and `netagent --help` stays fast.
"""

import importlib
import os
import sys

import click

from netagent import __version__
from netagent.errors import EXIT_SOFTWARE, EXIT_USAGE, AgentError


class LazyGroup(click.Group):
    """A group whose subcommands are 'module:attribute' strings until used."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module_name, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)


@click.group(
    cls=LazyGroup,
    lazy={
        "doctor": "netagent.commands.doctor:doctor",
        "run": "netagent.commands.run:run",
        "check": "netagent.commands.check:check",
        "config": "netagent.commands.config_cmd:config",
    },
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="netagent")
def cli():
    """netagent: which packets the kernel drops and why, conntrack trouble,
    path MTU black holes and DNS loss, explained with host context."""


@cli.group(
    cls=LazyGroup,
    lazy={
        "drops": "netagent.commands.trace_drops:drops",
        "conntrack": "netagent.commands.trace_conntrack:conntrack",
    },
)
def trace():
    """Watch kernel events (BPF sensors)."""


@cli.group(
    cls=LazyGroup,
    lazy={
        "mtu": "netagent.commands.probe_mtu:mtu",
        "dns": "netagent.commands.probe_dns:dns",
    },
)
def probe():
    """Active checks: path MTU, DNS."""


def main(argv=None):
    """Entry point: every failure becomes one line on stderr and a documented exit code."""
    try:
        rv = cli.main(args=argv, prog_name="netagent", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        # click's own usage errors: one line, with the valid choices it names
        prefix = "netagent"
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            prefix = ctx.command_path
        click.echo(f"{prefix}: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code if exc.exit_code else EXIT_USAGE)
    except AgentError as exc:
        click.echo(f"netagent: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # `netagent ... | head`: the reader left; not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        sys.exit(0)
    except Exception as exc:  # a bug: still one line unless asked for more
        if os.environ.get("NETAGENT_DEBUG"):
            raise
        click.echo(f"netagent: internal error: {type(exc).__name__}: {exc} (set NETAGENT_DEBUG=1 for a traceback)", err=True)
        sys.exit(EXIT_SOFTWARE)
    sys.exit(rv if isinstance(rv, int) else 0)
