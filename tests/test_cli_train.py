"""`qslab train`: the shipped recipe by default, options override it, the file is loadable."""

import json

import numpy as np
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


TRAIN = ["train", "--epochs", "3", "--train-subset", "600", "--hidden-units", "32", "--noise-aware", "--seed", "4"]


def interrupt_at_epoch(monkeypatch, epoch: int) -> None:
    """Ctrl-C while epoch ``epoch`` (1-based) is validated: its checkpoint is not written yet."""
    from qslab.analysis import training

    original, calls = training._validate, []

    def validate(*args):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(training, "_validate", validate)


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch, capsys):
    from qslab.analysis.training_checkpoint import checkpoint_path, load_checkpoint

    whole = tmp_path / "whole.npz"
    assert main([*TRAIN, "--out", str(whole), "--json"]) == 0
    assert not checkpoint_path(whole).exists()  # removed once the weights are written
    capsys.readouterr()
    cut = tmp_path / "cut.npz"
    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 2)
        assert main([*TRAIN, "--out", str(cut)]) == 130
    err = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
           if line and not line.startswith("noise-aware")]  # the progress bar's redraws
    assert len(err) == 1 and "1 of 3 epochs" in err[0] and f"qslab train --resume --out {cut}" in err[0], err
    assert not cut.exists() and load_checkpoint(checkpoint_path(cut)).epochs_done == 1
    assert main(["train", "--resume", "--out", str(cut), "--json"]) == 0  # the checkpoint's recipe, no options
    (resumed, meta), (reference, reference_meta) = load_weights(cut), load_weights(whole)
    for a, b in zip(resumed, reference):
        np.testing.assert_array_equal(a, b)  # bit for bit: Adam's moments and the generator were restored
    assert meta["resumed_after_epochs"] == 1 and meta["test_accuracy_digital"] == reference_meta["test_accuracy_digital"]
    assert [h["train_loss"] for h in meta["history"]] == [h["train_loss"] for h in reference_meta["history"]]


def test_resume_refuses_a_missing_checkpoint_and_other_options(tmp_path, monkeypatch, capsys):
    out = tmp_path / "w.npz"
    assert main(["train", "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no training checkpoint" in err[0] and "w.checkpoint.npz" in err[0]
    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 2)
        assert main([*TRAIN, "--out", str(out)]) == 130
    capsys.readouterr()
    assert main(["train", "--resume", "--epochs", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epochs: 3 -> 5" in err[0]


def test_an_interrupt_before_the_first_epoch_says_there_is_nothing_to_resume(tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 1)
        assert main([*TRAIN, "--out", str(tmp_path / "w.npz")]) == 130
    assert "nothing to resume" in capsys.readouterr().err
