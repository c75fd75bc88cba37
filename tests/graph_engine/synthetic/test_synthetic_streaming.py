"""Big databases stream to disk: peak memory does not grow with the number of rows."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

_SCRIPT = textwrap.dedent(
    """
    import json, re, sys
    from graph_engine.synthetic import default_config, generate, read_report
    cfg = default_config(int(sys.argv[1])).model_copy(update={"chunk_rows": int(sys.argv[3])})
    generate(cfg, sys.argv[2])
    rows = sum(read_report(sys.argv[2]).row_counts.values())
    # VmHWM is this process's own peak: ru_maxrss would carry the forking pytest worker's peak across exec.
    hwm_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
    print(json.dumps({"rows": rows, "rss_mb": hwm_kb / 1024}))
    """
)


def _run(events: int, out: Path, chunk_rows: int) -> dict[str, float]:
    args = [sys.executable, "-c", _SCRIPT, str(events), str(out), str(chunk_rows)]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.unit
def test_peak_memory_stays_bounded_while_rows_grow_tenfold(tmp_path: Path) -> None:
    small = _run(100_000, tmp_path / "small", chunk_rows=20_000)
    big = _run(1_000_000, tmp_path / "big", chunk_rows=20_000)
    assert big["rows"] > 8 * small["rows"]
    # Holding the tables would add ~90 MB of Arrow data (and as much again in copies); streaming
    # only fills a few more chunk buffers.
    assert big["rss_mb"] < 1024, big
    assert big["rss_mb"] - small["rss_mb"] < 70, (small, big)
    orders = pq.ParquetFile(tmp_path / "big" / "orders.parquet")
    assert orders.num_row_groups >= 30  # written chunk by chunk
    assert max(orders.metadata.row_group(i).num_rows for i in range(orders.num_row_groups)) <= 20_000


@pytest.mark.slow
def test_ten_million_rows_stream_in_bounded_memory(tmp_path: Path) -> None:
    big = _run(10_000_000, tmp_path / "big", chunk_rows=100_000)
    assert big["rows"] > 9_000_000
    assert big["rss_mb"] < 1024, big
