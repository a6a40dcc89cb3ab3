"""The `cutecpp` command line.

Errors are one line on stderr and exit status 1 (click conventions); a
traceback is shown only with CUTECPP_DEBUG=1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from .errors import CutecppError
from .sampling import SAMPLERS


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
    sections = {**cfg["components"], **({"sampling": cfg["sampling"]} if cfg.get("sampling") else {})}
    for name, comp in sections.items():
        click.echo(f"{name}:")
        for key, value in comp.items():
            if isinstance(value, list) and len(value) > 12:  # the verifier's labels: a count and a glimpse
                value = f"{len(value)}: {', '.join(map(str, value[:4]))}, ..., {value[-1]}"
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
        click.echo(f"int8 products:    {data['int8_products'] or 'none (q8_0 runs in ggml)'}")
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


class _Bar:
    """A progress bar on stderr when it is a terminal (and NO_COLOR-safe: no colours used); silent otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar = None
        self.done = 0
        self.show = sys.stderr.isatty()

    def update(self, done: int, total: int) -> None:
        if not self.show:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_percent=True)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
        self.done = 0


def _load_pipeline(model: str | None, threads: int | None, cache: bool):
    from .pipeline import Pipeline

    bars: dict[str, _Bar] = {}

    def build_progress(stage: str, done: int, total: int) -> None:
        label = {"verify": "text encoder: checking the parts", "prune": "text encoder: building"}.get(stage, stage)
        bars.setdefault(stage, _Bar(label)).update(done, total)

    try:
        return Pipeline.load(model, threads, cache=cache, build_progress=build_progress)
    finally:
        for bar in bars.values():
            bar.close()


def _output_paths(output: str | None, fmt: str | None, count: int, seed: int) -> tuple[list[Path], str]:
    """Where the pictures go; the format comes from --format, else the suffix, else WebP."""
    if output is None:
        fmt = fmt or "webp"
        base = Path(f"cutecpp-{seed}.{fmt}")
    else:
        base = Path(output)
        suffix = base.suffix.lower().lstrip(".")
        if fmt is None:
            fmt = suffix if suffix in ("webp", "png") else "webp"
        if suffix not in ("webp", "png"):
            base = base.with_name(base.name + f".{fmt}")
    if count == 1:
        return [base], fmt
    return [base.with_name(f"{base.stem}-{i + 1}{base.suffix}") for i in range(count)], fmt


@cli.command()
@click.argument("prompt", nargs=-1, required=True)
@click.option("-o", "--output", help="Picture file (default: cutecpp-SEED.webp); with --count N, -1 .. -N are added.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Same seed, same picture (default: random).")
@click.option("--steps", type=click.IntRange(1, 1000), help="Denoising steps (default: the model's).")
@click.option("--sampler", type=click.Choice(list(SAMPLERS)),
              help="Sampler (default: the model's).")
@click.option("--cfg", type=click.FloatRange(0, 30),
              help="Guidance scale (default: the model's; 1 turns it off; a model's unguided first steps stay so).")
@click.option("--size", type=int, help="Picture width and height in pixels (default: 512).")
@click.option("--threads", type=click.IntRange(1, 256), help="CPU threads (default: all available).")
@click.option("--model", type=click.Path(dir_okay=False), help="Model bundle (default: the shipped model).")
@click.option("--format", "fmt", type=click.Choice(["webp", "png"]),
              help="Picture format (default: from -o, else webp).")
@click.option("--count", type=click.IntRange(1, 100), default=1, show_default=True,
              help="How many pictures (seeds N, N+1, ...).")
@click.option("--candidates", type=click.IntRange(1, 16),
              help="Start this many seeds and finish the one the model's verifier finds the prompt in most surely "
                   "(default: the model's; 1: the seed alone).")
@click.option("--no-cache", is_flag=True, help="Always draw; neither read nor write the picture cache.")
@click.option("--json", "as_json", is_flag=True, help="Print metadata and timings as JSON.")
def generate(prompt: tuple[str, ...], output: str | None, seed: int | None, steps: int | None, sampler: str | None,
             cfg: float | None, size: int | None, threads: int | None, model: str | None, fmt: str | None,
             count: int, candidates: int | None, no_cache: bool, as_json: bool) -> None:
    """Draw PROMPT, e.g. cutecpp generate "小熊 穿蓝裤子 冰山上 笑" -o bear.webp

    Prints the picture's path (one line per picture) on stdout.
    """
    import secrets

    from .prompt import parse_prompt

    text_prompt = " ".join(prompt)
    try:
        parsed = parse_prompt(text_prompt)  # refuse before loading anything
        for notice in parsed.notices:
            click.echo(notice, err=True)
        if seed is None:
            seed = secrets.randbits(31)
        paths, fmt = _output_paths(output, fmt, count, seed)
        for path in paths:
            if path.is_dir():
                raise click.ClickException(f"{path}: is a directory; give a file name")
            if not (path.parent if str(path.parent) else Path(".")).is_dir():
                raise click.ClickException(f"{path}: the folder {path.parent} does not exist")
        pipe = _load_pipeline(model, threads, cache=not no_cache)
        results = []
        for i, path in enumerate(paths):
            bar = _Bar(f"drawing {path.name}")
            try:
                res = pipe.generate(text_prompt, seed=seed + i, steps=steps, sampler=sampler, cfg=cfg, size=size,
                                    progress=lambda step, n, bar=bar: bar.update(step, n), use_cache=not no_cache,
                                    candidates=candidates)
            finally:
                bar.close()
            res.save(path, fmt)
            results.append((path, res))
            if not as_json:
                click.echo(str(path))
    except CutecppError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _print_json([{"path": str(p), **r.meta, "timings_ms": r.timings, "cached": r.cached,
                      "notices": list(r.notices)} for p, r in results])


@cli.command()
@click.option("--model", type=click.Path(dir_okay=False), help="Prepare for this bundle (default: the shipped model).")
def setup(model: str | None) -> None:
    """Build the text encoder now (it is otherwise built on the first picture): for kiosk images."""
    try:
        pipe = _load_pipeline(model, None, cache=False)
    except CutecppError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"text encoder: {pipe.encoder.path}")


@cli.command()
@click.option("--model", type=click.Path(dir_okay=False), help="Benchmark this bundle (default: the shipped model).")
@click.option("--runs", type=click.IntRange(1, 100), default=5, show_default=True, help="Warm pictures to time.")
@click.option("--threads", type=click.IntRange(1, 256), help="CPU threads (default: all available).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def bench(model: str | None, runs: int, threads: int | None, as_json: bool) -> None:
    """End-to-end benchmark: cold load, warm ms per 512x512 picture, per-stage split, peak RSS."""
    from .bench import run_bench

    try:
        report = run_bench(model, runs=runs, threads=threads)
    except CutecppError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _print_json(report)
        return
    click.echo(f"model:        {report['model_id']} ({report['model']})")
    if report["random_weights"]:
        click.echo("              (random weights: timings only, the pictures are noise)")
    click.echo(f"settings:     {report['settings']}")
    click.echo(f"cold:         {report['cold_load_ms']:.0f} ms load, {report['cold_first_picture_ms']:.0f} ms "
               f"first picture ({report['cold_total_ms']:.0f} ms from process start)")
    warm = report["warm_ms"]
    click.echo(f"warm:         {warm['total']:.0f} ms per picture (text {warm['text']:.0f}, denoise "
               f"{warm['denoise']:.0f}, decode {warm['decode']:.0f}; median of {runs})")
    click.echo(f"peak RSS:     {report['peak_rss_mb']:.0f} MB")


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
