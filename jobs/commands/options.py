"""Command-line parameters several commands share, declared once so their names and help stay the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

GraphArg = Annotated[str, typer.Argument(help="A built graph folder, or a graph spec (YAML).")]
QueryOpt = Annotated[str, typer.Option("--query", "-q", help="The PQL query.")]
ParquetOut = Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")]
