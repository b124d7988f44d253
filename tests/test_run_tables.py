"""The generated sections of run CSVs without a paper table (body, sim2real): latest row per key, blanks kept."""

from benchmarks import run_tables


def test_latest_row_per_key_and_empty_cells(tmp_path):
    (tmp_path / "body.csv").write_text(
        "split,patch_acc,miou,uv_median_correct,uv_median_all,uv_auc_all,n_images,source,preset,seed,artefacts\n"
        "test,0.10,0.1,0.2,0.3,0.4,5,synthetic,cpu,0,body=aaa/cpu/body\n"
        "test,0.56,,0.2,0.3,0.4,5,synthetic,cpu,0,body=aaa/cpu/body\n"
        "test,0.70,0.2,0.2,0.3,0.4,5,synthetic,cpu,1,body=bbb/cpu/body\n")
    text = run_tables.markdown(tmp_path, "body")
    assert "| synthetic | cpu | 0 | body=aaa/cpu/body | 0.56 |  |" in text   # the later row of seed 0; blank miou
    assert "| 0.1 |" not in text   # the superseded row of seed 0 is not shown
    assert "body=bbb/cpu/body | 0.7" in text and text.count("body=aaa") == 1


def test_absent_csv_gives_no_section(tmp_path):
    assert run_tables.markdown(tmp_path, "sim2real") == ""
