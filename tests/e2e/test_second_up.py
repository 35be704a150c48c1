"""A second ``dashfrog up`` on a chDB database another process holds fails at
once, in one line naming that process, before starting anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DASHFROG = str(Path(sys.executable).parent / "dashfrog")

_HOLD = """
import sys
from dashfrog.storage import open_store
store = open_store(sys.argv[1])
print("open", flush=True)
sys.stdin.read()  # until the test closes it
store.close()
"""


def test_second_up_says_who_holds_the_store_in_one_line(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path / 'chdb'}"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DASHFROG_")}
        env["DASHFROG_CLICKHOUSE_URL"] = url
        result = subprocess.run(
            [DASHFROG, "up"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
    assert result.returncode == 1
    assert result.stdout == ""  # no broker started, nothing claimed
    assert result.stderr.strip() == (
        f"Error: {url} is in use by process {holder.pid}: is another `dashfrog up` running? "
        "Stop it, or set DASHFROG_CLICKHOUSE_URL to another chdb:// path"
    )
