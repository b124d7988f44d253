"""formats.build_folder: a folder appears whole or not at all (the synthetic generators all build this way)."""

import pytest

from densereg.data import formats


def test_a_finished_build_replaces_the_folder(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    (out / "old.txt").write_text("old")
    result = formats.build_folder(out, lambda tmp: (tmp / "new.txt").write_text("new") and "done")
    assert result == "done"
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_a_failed_build_leaves_the_old_folder_and_no_temp(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    (out / "old.txt").write_text("old")

    def fail(tmp):
        (tmp / "half.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        formats.build_folder(out, fail)
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["set"]
