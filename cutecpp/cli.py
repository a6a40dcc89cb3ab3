"""The `cutecpp` command line.

Errors are one line on stderr and exit status 1 (click conventions); a
traceback is shown only with CUTECPP_DEBUG=1.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from .errors import CutecppError


def _print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2))


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def _print_model(info: dict[str, Any]) -> None:
    cfg = info["config"]
    click.echo(f"model:      {cfg['model_id']}" + (f" ({cfg['name']})" if cfg["name"] else ""))
    click.echo(f"file:       {info['path']} ({_human_bytes(info['file_size'])}, GGUF v{info['gguf_version']})")
    click.echo(f"format:     cutecpp bundle v{cfg['format_version']}")
    click.echo(f"license:    {cfg['license'] or 'not recorded'}")
    click.echo(f"tensors:    {info['n_tensors']} ({info['n_params']:,} parameters)")
    for dtype, use in info["dtypes"].items():
        click.echo(f"  {dtype:<8}  {use['tensors']:>5} tensors  {_human_bytes(use['bytes'])}")
    for name, comp in cfg["components"].items():
        click.echo(f"{name}:")
        for key, value in comp.items():
            click.echo(f"  {key}: {value}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cutecpp")
def cli() -> None:
    """cutecpp: cute animal pictures from short prompts, offline, on a CPU."""


@cli.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=True), help="Describe this model bundle.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def info(model_path: str | None, as_json: bool) -> None:
    """Show the installation (version, CPU features, threads) or a model bundle."""
    from .info import system_info
    from .model import Model

    if model_path is None:
        data = system_info()
        if as_json:
            _print_json(data)
            return
        click.echo(f"cutecpp {data['version']}")
        click.echo(f"ggml features:    {' '.join(data['ggml_features']) or 'none'}")
        click.echo(f"threads:          {data['threads']}")
        click.echo(f"llama-cpp-python: {data['llama_cpp_python']}")
        click.echo(f"default model:    {data['default_model'] or 'none installed yet'}")
        return
    try:
        described = Model.load(model_path).info
    except CutecppError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _print_json(described)
    else:
        _print_model(described)


def main() -> None:
    """Entry point: the click group, with any unexpected error kept to one line."""
    try:
        cli.main(prog_name="cutecpp", standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        click.echo("Aborted!", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback
        if os.environ.get("CUTECPP_DEBUG"):
            raise
        click.echo(f"Error: internal error ({type(exc).__name__}): {exc} (CUTECPP_DEBUG=1 shows details)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
