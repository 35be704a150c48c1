"""``dashfrog settings`` shows the values in effect and where each came from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DASHFROG = str(Path(sys.executable).parent / "dashfrog")


def test_settings_show_effective_values_and_their_source(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DASHFROG_API_PORT=9999\nDASHFROG_ADMIN_TOKEN=s3cret\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHFROG_")}
    env |= {"DASHFROG_TOPIC_PREFIX": "staging.", "DASHFROG_API_PORT": "7000"}
    result = subprocess.run(
        [DASHFROG, "settings"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = set(result.stdout.splitlines())
    assert "DASHFROG_TOPIC_PREFIX=staging.  (from env)" in lines
    assert "DASHFROG_API_PORT=7000  (from env)" in lines  # the environment wins over .env
    assert "DASHFROG_ADMIN_TOKEN=********  (from .env)" in lines
    assert "DASHFROG_EVENTS_TOPIC=dashfrog.events  (from default)" in lines
    assert "s3cret" not in result.stdout
