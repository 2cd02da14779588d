"""`netagent config check|show`: validate and print the agent's configuration."""

import sys

import click

from netagent import config as config_mod
from netagent.jsonline import dumps_line


def _path_argument(func):
    return click.argument("path", required=False, type=click.Path(dir_okay=False))(func)


@click.group()
def config():
    """Validate or show the `netagent run` configuration."""


@config.command()
@_path_argument
def check(path):
    """Validate PATH (default: /etc/netagent/netagent.toml, else the embedded
    default). Exit 0 if valid, 78 naming the file and key if not."""
    cfg = config_mod.load(path)
    sensors = []
    for module in cfg.sensor_modules:
        table = cfg.sensors.get(module.section, {})
        if not module.loaded:
            sensors.append(f"{module.section} (not checked: {module.error})")
        else:
            sensors.append(f"{module.section} ({'enabled' if table.get('enabled', True) else 'disabled'})")
    sinks = ", ".join(f"{s['name']} ({s['type']})" if s["name"] != s["type"] else s["type"] for s in cfg.sinks)
    click.echo(f"{cfg.source}: OK; sensors: {', '.join(sensors) or 'none'}; sinks: {sinks}")
    for module in cfg.sensor_modules:
        if not module.loaded:
            click.echo(f"netagent: warning: sensor {module.section}: {module.error}", err=True)
    return 0


@config.command()
@_path_argument
@click.option("--output", "-o", type=click.Choice(["toml", "json"]), default="toml",
              help="toml (default, loadable with --config) or json.")
def show(path, output):
    """Print the effective configuration of PATH with every default filled in."""
    cfg = config_mod.load(path)
    doc = cfg.as_document()
    if output == "json":
        sys.stdout.buffer.write(dumps_line(doc))
    else:
        click.echo(f"# effective configuration from {cfg.source}, defaults merged")
        click.echo(config_mod.to_toml(doc), nl=False)
    return 0
