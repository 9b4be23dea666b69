"""Write-then-rename: a failed write leaves the old file whole and no temporary file behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from qnas_hw.atomic_write import atomic_write, atomic_write_text


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "config.json"
    assert atomic_write_text(target, "old\n") == target and target.read_text() == "old\n"

    def crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        atomic_write(target, crash)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["config.json"]
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n" and len(list(target.parent.iterdir())) == 1
