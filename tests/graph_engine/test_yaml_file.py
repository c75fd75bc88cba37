"""Every YAML file a user writes fails the same way: one line naming the file and the line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

from graph_engine.errors import RelfmError, SpecError
from graph_engine.yaml_file import read_yaml

pytestmark = pytest.mark.unit


def test_a_mapping_is_read(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("a: 1\nb: [x, y]\n")
    assert read_yaml(tmp_path / "c.yaml", "job config") == {"a": 1, "b": ["x", "y"]}


def test_missing_and_broken_files_name_file_and_position(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^graph spec .*nope\.yaml: file not found$"):
        read_yaml(tmp_path / "nope.yaml", "graph spec", SpecError)
    (tmp_path / "bad.yaml").write_text("a: 1\nb: [x\n")
    with pytest.raises(RelfmError, match=r"^job config .*bad\.yaml: invalid YAML at 3:1$"):
        read_yaml(tmp_path / "bad.yaml", "job config")
