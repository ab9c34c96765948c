"""`qslab train`: the shipped recipe by default, options override it, the file is loadable."""

import json

import pytest

from qslab.analysis.network import load_weights
from qslab.sequences.cli import main


def test_short_training_run_writes_loadable_weights(tmp_path, capsys):
    out = tmp_path / "w.npz"
    assert main(["train", "--epochs", "1", "--train-subset", "3000", "--plain", "--seed", "3", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    weights, meta = load_weights(out)
    assert [w.shape for w in weights] == [(784, 784), (10, 784)]
    assert meta["config"]["noise_aware"] is False and meta["config"]["seed"] == 3 and meta["config"]["epochs"] == 1
    assert summary["test_accuracy_digital"] == pytest.approx(meta["test_accuracy_digital"])
    assert summary["test_accuracy_digital"] > 0.7  # far above chance after one epoch on 3000 images


def test_defaults_repeat_the_shipped_recipe():
    from qslab.sequences.commands.train import recipe

    class Args:
        json = True

    shipped = load_weights()[1]["config"]
    config = recipe(Args())
    assert config.noise_aware == shipped["noise_aware"] and config.epochs == shipped["epochs"]


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--photons-min", "-1"], ["--gain", "1"], ["--shift-px", "20"]])
def test_bad_options_get_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", *argv])
    assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
