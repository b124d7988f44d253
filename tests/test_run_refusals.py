"""What the harness refuses instead of recording a misleading row (review issue 10)."""

import numpy as np
import pytest

from benchmarks import context
from benchmarks.baselines import dpm_config, mdm
from densereg.data import datasets as ds
from densereg.data import formats
from densereg.nn import config
from tests.test_run import _outputs_in_tmp, data, run_cli  # noqa: F401 - fixtures: the 300-W tree; outputs in tmp


def test_a_misspelt_preset_is_refused_naming_the_valid_ones(data, tmp_path, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as exc:
        run_cli("300w", "--init", "mean-shape", "--preset", "cpuu", "--results", tmp_path / "results")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'cpuu'" in err and "'cpu'" in err and "'paper'" in err
    with pytest.raises(KeyError, match="unknown preset 'cpuu'; valid: cpu, default, paper, tiny"):
        context.RunContext(source="synthetic", root=tmp_path, dataset="300w", runs_dir=tmp_path, preset="cpuu")


def test_the_harness_presets_are_every_methods_presets():
    named = set(context.PRESETS) - {"default"}
    network = set(config.PRESETS) - set(config.NETWORK_ONLY_PRESETS)
    assert named == network == set(dpm_config.PRESETS) == set(mdm.PRESETS)


def test_predictions_with_another_point_count_stop_the_run_naming_the_file(data, tmp_path, capsys):  # noqa: F811
    preds = tmp_path / "preds"
    for s in ds.load_dataset("300w", data, "test"):
        formats.write_pts(preds / f"{s.name}.pts", s.landmarks)
    formats.write_pts(preds / "01_Indoor" / "indoor_002.pts", np.zeros((5, 2)))   # a 5-point file
    assert run_cli("300w", "--init", f"preds:{preds}", "--results", tmp_path / "results") == 2
    err = capsys.readouterr().err
    assert "indoor_002.pts" in err and "68" in err
    assert not (tmp_path / "results" / "300w.csv").exists()


def test_predictions_are_identified_by_their_content(data, tmp_path):  # noqa: F811
    preds = tmp_path / "preds"
    samples = ds.load_dataset("300w", data, "test")
    for s in samples:
        formats.write_pts(preds / f"{s.name}.pts", s.landmarks)
    ctx = context.RunContext(source="real", root=data, dataset="300w", runs_dir=tmp_path)
    from benchmarks.initialisers import preds_factory

    preds_factory(preds, ctx)
    before = ctx.artefacts["preds"]
    formats.write_pts(preds / f"{samples[0].name}.pts", samples[0].landmarks + 1.0)
    preds_factory(preds, ctx)
    assert ctx.artefacts["preds"] != before


def test_a_method_that_fails_on_every_image_records_nothing(data, tmp_path, capsys):  # noqa: F811
    assert run_cli("300w", "--init", "os:getcwd", "--results", tmp_path / "results") == 2
    err = capsys.readouterr().err
    assert "failed on every one of the 6 images" in err and "init-error" in err and "getcwd" in err
    assert not (tmp_path / "results" / "300w.csv").exists()


@pytest.mark.parametrize("spec", ["pred:/tmp/x", "boxs:/tmp/x", "no_such_module_xyz:f"])
def test_a_misspelt_prefix_names_every_valid_form(data, tmp_path, capsys, spec):  # noqa: F811
    assert run_cli("300w", "--init", spec, "--results", tmp_path / "results") == 2
    err = capsys.readouterr().err
    assert "valid: boxes:ARG, densereg" in err and "preds:ARG" in err and "package.module:callable" in err
    assert f"no module named {spec.split(':')[0]!r}" in err


def test_the_row_records_the_preset_default_resolved_to(data, tmp_path):  # noqa: F811
    results = tmp_path / "results"
    assert run_cli("300w", "--init", "mean-shape", "--results", results) == 0
    assert run_cli("300w", "--init", "mean-shape", "--preset", "paper", "--results", results) == 0   # the same
    from tests.test_run import read_row

    rows = read_row(results)[0]
    assert [r["preset"] for r in rows] == ["paper"]
    ctx = context.RunContext(source="synthetic", root=tmp_path, dataset="300w", runs_dir=tmp_path)
    assert (ctx.preset, ctx.preset_named) == ("cpu", False)
