"""The README's Layout table maps every top-level folder to its package and
its job, in the very words of that package's docstring."""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layout_rows() -> list[tuple[str, str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows.append((cells[0].strip("`").rstrip("/"), cells[1].strip("`"), cells[2]))
    return rows


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n", 1)[0].split())


def test_every_top_level_folder_is_in_the_layout_table() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    folders = {path.split("/", 1)[0] for path in tracked.splitlines() if "/" in path and not path.startswith(".")}
    listed = {folder for folder, _, _ in _layout_rows()}
    assert folders <= listed, f"add to the README's Layout table: {sorted(folders - listed)}"
    assert listed <= folders | {p.name for p in ROOT.iterdir() if p.is_dir()}


def test_each_package_docstring_says_its_job_as_the_table_does() -> None:
    packages = [(folder, package, job) for folder, package, job in _layout_rows() if package]
    assert {p for _, p, _ in packages} >= {"dashfrog", "dashfrog.schemas", "dashfrog.storage", "dashfrog.streams", "dashfrog.web"}
    for folder, package, job in packages:
        module = importlib.import_module(package)
        assert Path(module.__file__ or "").parent == ROOT / folder, (package, folder)
        assert _first_paragraph(module.__doc__) == re.sub(r"\s+", " ", job), package


def test_each_package_face_lists_what_it_exports_sorted() -> None:
    for _, package, _ in _layout_rows():
        if not package:
            continue
        module = importlib.import_module(package)
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{package} has no __all__"
        assert exported == sorted(exported), package
        missing = [name for name in exported if not hasattr(module, name)]
        assert not missing, f"{package}.__all__ names what it lacks: {missing}"
