"""The README's speed table shows the latest row of each figure, with its load, from results/speed.csv only."""

from benchmarks import records
from benchmarks.experiments import speed_table


def test_latest_row_per_figure_with_load(tmp_path):
    path = tmp_path / "speed.csv"
    base = {"figure": "inference", "candidate": "folded", "unit": "images/s", "model": "cpu", "size": 300,
            "batch": 1, "dtype": "fp32", "threads": 2}
    records.append_speed_rows(path, [{**base, "value": 5.0, "load": 9.5}], "cpu: test")
    rows, _ = records.read_csv(path)
    assert rows[0]["device"] == "cpu: test" and rows[0]["date"] and rows[0]["commit"]
    later = {**rows[0], "value": "7.5", "load": "1.2", "date": rows[0]["date"][:4] + "9" + rows[0]["date"][5:]}
    raster = {"figure": "raster", "candidate": "rasterize", "value": "410", "unit": "renders/s", "load": "3.0",
              "device": "cpu: test", "date": rows[0]["date"]}
    records.write_csv(path, [raster, rows[0], later], records.SCHEMAS["speed"].columns)
    latest = speed_table.latest_rows(path)
    assert [(r["figure"], r["value"], r["load"]) for r in latest] == [("inference", "7.5", "1.2"),
                                                                     ("raster", "410", "3.0")]
    text = speed_table.markdown(path)
    assert "| inference | folded | cpu | 300 | 1 | fp32 | 2 | 7.5 images/s |" in text and "| 1.2 |" in text
    assert "5.0 images/s" not in text
    assert speed_table.markdown(tmp_path / "absent.csv") == ""
