"""`relfm graph ...`: infer, validate and build relational graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines import build_graph

app = typer.Typer(help="Infer, validate and build relational graphs.", no_args_is_help=True)
out = Console()


@app.command()
def infer(
    source: Annotated[
        str, typer.Argument(help="Folder of Parquet/CSV/Delta tables, or a DuckDB/SQLite file.")
    ],
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the spec here instead of stdout.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Graph name (default: the folder name).")] = None,
) -> None:
    """Print a complete graph spec (keys, time columns, links, semantic types) inferred from the data."""
    spec = build_graph.infer(source, name)
    if out_file is None:
        typer.echo(spec.to_yaml(), nl=False)
    else:
        spec.save(out_file)
        Console(stderr=True).print(f"wrote {out_file}")


@app.command()
def validate(spec: Annotated[Path, typer.Argument(help="Graph spec (YAML).")]) -> None:
    """Check a spec against its data: columns, keys, timestamps, link types, missing links."""
    report = build_graph.validate(spec)
    t = Table("table", "rows", "null times", "time range", title=f"{spec}: valid")
    for name, e in report["tables"].items():
        rng = ""
        if e.get("time_min") is not None:
            import numpy as np

            rng = f"{np.datetime64(e['time_min'], 'ns')} .. {np.datetime64(e['time_max'], 'ns')}"
        t.add_row(name, str(e["rows"]), str(e.get("null_times", "")), rng)
    out.print(t)
    for link, n in report["missing_links"].items():
        if n:
            out.print(
                f"[yellow]{link}: {n} rows link to no parent row; kept as missing links[/]", soft_wrap=True
            )


@app.command()
def build(
    spec: Annotated[Path, typer.Argument(help="Graph spec (YAML).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the graph to.")],
    engine: Annotated[str, typer.Option(help="local (Arrow/NumPy) or spark (PySpark job).")] = "local",
    rows_per_shard: Annotated[int, typer.Option(help="Rows per shard (a multiple of 65536).")] = 1 << 22,
) -> None:
    """Build the memory-mapped CSR shards of a graph."""
    manifest = build_graph.build(spec, out_dir, engine=engine, rows_per_shard=rows_per_shard)
    c = manifest["counts"]
    added = f", {c['added_parent_rows']} key-only parent rows added" if c.get("added_parent_rows") else ""
    out.print(
        f"built graph {manifest['graph_id']} in {out_dir}: {c['rows']} rows, {c['edges']} edges, "
        f"{c['missing_links']} missing links{added} ({manifest['build']['seconds']} s, "
        f"{manifest['build']['engine']})",
        soft_wrap=True,  # one line whatever the terminal width, so scripts can grep it
    )
