"""Result records: upsert keyed by the schema, and a run's row and errors file written as one unit."""

import pytest

from benchmarks import records

SCHEMA = records.Schema(("k", "v", "seed"), ("k", "seed"))


def errors(n, value="0.1"):
    return [{"name": f"img{i}", "error": value, "status": "ok", "message": "", "seconds": "0.1"} for i in range(n)]


def test_upsert_replaces_by_key_and_keeps_foreign_columns(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("k,v,seed,extra\na,1,0,x\nb,2,0,y\n")
    assert records.upsert_rows(table, [{"k": "a", "v": "3", "seed": "0"}, {"k": "a", "v": "4", "seed": "1"}],
                               SCHEMA) == 1
    rows, columns = records.read_csv(table)
    assert columns == ["k", "v", "seed", "extra"]
    assert [(r["k"], r["v"], r["seed"], r["extra"]) for r in rows] == [("b", "2", "0", "y"), ("a", "3", "0", ""),
                                                                        ("a", "4", "1", "")]


def test_write_run_never_leaves_a_row_beside_another_runs_errors(tmp_path, monkeypatch):
    table, err = tmp_path / "t.csv", tmp_path / "errors" / "a.csv"
    records.write_run(table, [{"k": "a", "v": "1", "seed": "0"}], SCHEMA, err, errors(3))
    assert len(records.read_csv(err)[0]) == 3

    def crash(*args):
        raise KeyboardInterrupt("killed while upserting")

    monkeypatch.setattr(records, "_upsert_unlocked", crash)
    with pytest.raises(KeyboardInterrupt):
        records.write_run(table, [{"k": "a", "v": "2", "seed": "0"}], SCHEMA, err, errors(5, "0.2"))
    # The old row and its own errors file are intact; no temporary file is left behind.
    assert records.read_csv(table)[0][0]["v"] == "1"
    assert [r["error"] for r in records.read_csv(err)[0]] == ["0.1"] * 3
    assert sorted(p.name for p in err.parent.iterdir()) == ["a.csv"]


def test_read_table_names_a_broken_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("")
    with pytest.raises(ValueError, match=r"t\.csv: not a readable CSV"):
        records.read_table(path)
    assert records.read_table(tmp_path / "absent.csv").empty
