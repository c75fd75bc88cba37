"""The `relfm` command line: parses arguments and calls pipelines; all logic lives below.

Every bad input surfaces as one red line naming the table, column or query position and exit code 2;
anything unexpected as one line and exit code 1 (RELFM_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import os
import sys

import typer

from graph_engine.errors import RelfmError
from jobs.commands import evaluate as evaluate_cmd
from jobs.commands import finetune as finetune_cmd
from jobs.commands import graph as graph_cmd
from jobs.commands import labels as labels_cmd
from jobs.commands import predict as predict_cmd
from jobs.commands import pretrain as pretrain_cmd
from jobs.commands import run as run_cmd
from jobs.commands import score as score_cmd

app = typer.Typer(
    help="relfm: a relational foundation model and the nightly batch-scoring pipeline around it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(graph_cmd.app, name="graph")
run_cmd.register(app)
pretrain_cmd.register(app)
labels_cmd.register(app)
predict_cmd.register(app)
finetune_cmd.register(app)
score_cmd.register(app)
evaluate_cmd.register(app)


def main() -> None:
    from rich.console import Console

    err = Console(stderr=True)
    try:
        app(standalone_mode=True)
    except RelfmError as e:
        err.print(f"[bold red]error:[/] {e.message}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/]")
        sys.exit(130)
    except Exception as e:  # a bug, not bad input: one line, traceback on request
        if os.environ.get("RELFM_DEBUG"):
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        err.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {first} (RELFM_DEBUG=1 shows the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
