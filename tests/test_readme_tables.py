"""Every README results table is what benchmarks/readme_tables.py builds from benchmarks/results/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "readme_tables.py"


def test_readme_tables_match_the_committed_results() -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_a_hand_edited_figure_is_caught() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import readme_tables
    finally:
        sys.path.remove(str(SCRIPT.parent))
    readme = (ROOT / "README.md").read_text()
    assert "<!-- table:search_quality -->" in readme
    tampered = re.sub(
        r"(<!-- table:search_quality -->\n\|[^\n]*\n\|[^\n]*\n\| \w[\w-]* \| )[0-9.]+", r"\g<1>9.9999", readme, count=1
    )
    assert tampered != readme
    assert readme_tables.render(tampered) == readme
