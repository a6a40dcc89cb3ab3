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


_CATEGORY_TITLES = {
    "animal": "小动物 animals", "item": "穿戴和拿着的东西 things to wear or hold", "verb": "动作 verbs",
    "colour": "颜色 colours", "count": "数量 counts", "place": "地方和景物 places", "light": "光 light",
    "expression": "样子 moods", "filler": "可以省略的词 words left out", "refuse": "画不了的词 words refused",
    "rewrite": "会换掉的词 words rewritten",
}


def _entry_line(e: Any, vocab: Any) -> str:
    """One entry for people: canonical words and emoji first, then what else matters for it."""
    head = f"  {e.zh_word or '-'}  {e.en_word or '-'}" + (f"  {e.emoji}" if e.emoji else "")
    more = [w for w in (*e.zh[1:], *e.en[1:])]
    if e.category == "item":
        verbs = "/".join(vocab.get(v).zh_word for v in e.verbs)
        head += f"  [{e.slot}; {verbs}{'; any colour' if e.recolour else ''}]"
    elif e.category == "refuse":
        head = f"  {' '.join((*e.zh, *e.en))}: {e.reason['zh']} / {e.reason['en']}".replace("{word}", "…")
        more = []
    elif e.category == "rewrite":
        head = f"  {' '.join((*e.zh, *e.en))} -> {' '.join(e.to)}"
        more = []
    elif e.category == "filler":
        head, more = f"  {' '.join((*e.zh, *e.en))}", []
    return head + (f"  ({', '.join(more)})" if more else "")


@cli.command()
@click.option("--category", "-c", "category", help="Only this category (animal, item, place, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def words(category: str | None, as_json: bool) -> None:
    """List the words cutecpp knows, by category: Chinese words with their English glosses."""
    from .vocab import CATEGORIES, load_vocabulary

    if category is not None and category not in CATEGORIES:
        raise click.ClickException(f"unknown category {category!r} (choose from: {', '.join(CATEGORIES)})")
    try:
        vocab = load_vocabulary()
    except CutecppError as exc:
        raise click.ClickException(str(exc)) from None
    shown = [category] if category else list(CATEGORIES)
    if as_json:
        _print_json({"format_version": vocab.version, "licence": vocab.licence,
                     "entries": {c: [e.as_dict() for e in vocab.entries(c)] for c in shown}})
        return
    for name in shown:
        entries = vocab.entries(name)
        click.echo(f"{name} ({len(entries)}): {_CATEGORY_TITLES.get(name, name)}")
        for e in entries:
            click.echo(_entry_line(e, vocab))


@cli.command()
@click.argument("prompt", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (exit status 1 on refusal).")
def check(prompt: tuple[str, ...], as_json: bool) -> None:
    """Show how PROMPT is understood, or why it cannot be drawn (exit status 1)."""
    from .prompt import check_prompt

    try:
        result = check_prompt(" ".join(prompt))
    except CutecppError as exc:  # a broken vocabulary, not a refused prompt
        raise click.ClickException(str(exc)) from None
    if as_json:
        _print_json(result.as_dict())
        if not result.ok:
            sys.exit(1)
        return
    if not result.ok:
        raise click.ClickException(str(result))
    click.echo(str(result))


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
