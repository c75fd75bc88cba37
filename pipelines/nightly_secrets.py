"""Secrets of the nightly job: read from the environment or a secret scope, and kept out of everything
the job writes.

A job file names the environment variables the job needs (MLFLOW_TRACKING_TOKEN, DATABRICKS_TOKEN,
AWS_SECRET_ACCESS_KEY...) and where each value comes from: `env:VAR` (the scheduler's environment, a
Kubernetes secret, a Databricks `{{secrets/...}}` cluster variable) or `scope:SCOPE/KEY` (read with
Databricks' dbutils). While the job runs the values sit in its environment, where the clients that need
them (MLflow, delta-rs, the Databricks SDK) look; they are never put in a config, a parameter or a file.

As a second line of defence every text the job itself emits (log lines, the summary, the state file,
MLflow parameters and tags it sets) goes through `Redactor`, which replaces the value of every declared
secret, and of every environment variable whose name says it holds one, with `***`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

from graph_engine.errors import RelfmError

# environment variables whose names say they hold a secret: redacted even when the job file does not
# declare them (the scheduler may have set them for clients relfm uses)
HINTS = ("TOKEN", "PASSWORD", "SECRET", "API_KEY", "ACCESS_KEY", "PRIVATE_KEY", "CREDENTIAL")
MIN_LENGTH = 4  # shorter values would redact ordinary words and digits
HINTED_MIN_LENGTH = 8  # undeclared variables: only values that look like credentials, not flags or ports
MASK = "***"


def resolve(refs: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{ENV_NAME: value} for the job's declared secrets; a one-line error names the missing one."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for name, ref in refs.items():
        kind, _, where = ref.partition(":")
        if kind == "env":
            value = env.get(where)
            if not value:
                raise RelfmError(
                    f"secret {name}: environment variable {where} is not set (secrets.{name}: {ref})"
                )
        elif kind == "scope":
            value = _from_scope(name, where)
        else:
            raise RelfmError(
                f"secret {name}: unknown reference kind '{kind}' (use env:VAR or scope:SCOPE/KEY)"
            )
        out[name] = value
    return out


def _from_scope(name: str, where: str) -> str:
    scope, _, key = where.partition("/")
    try:
        from databricks.sdk.runtime import dbutils
    except Exception:  # not on Databricks and no SDK: nothing to read a scope with
        raise RelfmError(
            f"secret {name}: scope:{where} needs Databricks (dbutils) or the databricks-sdk with workspace "
            "credentials; elsewhere use env:VAR"
        ) from None
    try:
        value = dbutils.secrets.get(scope=scope, key=key)
    except Exception as e:  # the SDK's errors carry no secret, but keep them to their type
        raise RelfmError(f"secret {name}: cannot read scope:{where} ({type(e).__name__})") from None
    if not value:
        raise RelfmError(f"secret {name}: scope:{where} is empty")
    return str(value)


def hinted(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names say they are secrets."""
    env = os.environ if environ is None else environ
    return [
        v
        for k, v in env.items()
        if any(h in k.upper() for h in HINTS) and len(v) >= HINTED_MIN_LENGTH and not v.isdigit()
    ]


class Redactor:
    """Replaces known secret values (longest first, so a secret containing another is fully masked)."""

    def __init__(self, values: list[str] | None = None) -> None:
        self.values: list[str] = []
        self.add(values or [])

    def add(self, values: list[str]) -> None:
        merged = {v for v in [*self.values, *values] if len(v) >= MIN_LENGTH}
        self.values = sorted(merged, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for v in self.values:
            if v in text:
                text = text.replace(v, MASK)
        return text

    def deep(self, obj: Any) -> Any:
        """The same, through dicts, lists and tuples (for JSON written to files and MLflow)."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {self(str(k)) if isinstance(k, str) else k: self.deep(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.deep(v) for v in obj]
        return obj


class _RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = self.redactor(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


@contextlib.contextmanager
def secret_env(values: Mapping[str, str], redactor: Redactor) -> Iterator[None]:
    """The secrets in this process's environment (for the clients that read them) while the job runs,
    and a redacting filter on the root logger's handlers; both undone afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    filt = _RedactingFilter(redactor)
    handlers = list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(filt)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(filt)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
