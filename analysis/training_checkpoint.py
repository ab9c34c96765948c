"""A training checkpoint per epoch: what `train` needs to continue to the very weights an uninterrupted run ends with.

Why all of it: the weights alone would restart Adam from zero moments and draw other minibatches and
noise, so a resumed run would end elsewhere. The checkpoint holds the weights, Adam's moments and step
count, the generator's state (minibatch order, shifts and training noise all come from it), the history
and the config; resuming under another config is refused, since the schedule and the draws would differ.
An .npz read without pickle, written to a temporary file and moved into place, so a kill while writing
leaves the previous epoch's checkpoint intact.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FORMAT = "qslab.training_checkpoint"
VERSION = 1
_NOT_COMPARED = ("progress",)  # config fields that do not change the run


@dataclass
class Checkpoint:
    """The state after ``epochs_done`` complete epochs."""

    config: dict
    epochs_done: int
    weights: list[np.ndarray]
    adam_m: list[np.ndarray]
    adam_v: list[np.ndarray]
    adam_steps: int
    rng_state: dict
    history: list[dict]
    elapsed_s: float


def checkpoint_path(weights_path: str | Path) -> Path:
    """Where `qslab train --out FILE.npz` keeps its checkpoint: FILE.checkpoint.npz beside it."""
    path = Path(weights_path)
    return path.with_name(f"{path.name.removesuffix('.npz')}.checkpoint.npz")


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    path = Path(path)
    state = {"format": FORMAT, "version": VERSION, "config": checkpoint.config, "epochs_done": checkpoint.epochs_done,
             "adam_steps": checkpoint.adam_steps, "rng_state": checkpoint.rng_state, "history": checkpoint.history,
             "elapsed_s": checkpoint.elapsed_s}
    arrays = {f"{name}{i}": array for name, arrays in (("W", checkpoint.weights), ("m", checkpoint.adam_m),
                                                        ("v", checkpoint.adam_v)) for i, array in enumerate(arrays)}
    temporary = path.with_name(f".{path.name}.writing")
    with temporary.open("wb") as handle:  # a handle keeps numpy from appending '.npz'
        np.savez(handle, state=np.array(json.dumps(state, sort_keys=True)), **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``; ValueError naming the file if it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no training checkpoint (one is written after each epoch of `qslab train`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            state = json.loads(str(data["state"]))
            if state.get("format") != FORMAT or state.get("version") != VERSION:
                raise ValueError(f"format {state.get('format')!r} version {state.get('version')!r}")
            layers = sum(1 for key in data.files if key.startswith("W"))
            arrays = {name: [data[f"{name}{i}"] for i in range(layers)] for name in ("W", "m", "v")}
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: not a qslab training checkpoint ({error}); expected {FORMAT} version "
                         f"{VERSION}") from None
    return Checkpoint(state["config"], int(state["epochs_done"]), arrays["W"], arrays["m"], arrays["v"],
                      int(state["adam_steps"]), state["rng_state"], state["history"], float(state["elapsed_s"]))


def config_differences(config, checkpoint: Checkpoint) -> list[str]:
    """The config fields that differ from the checkpoint's, as ``name: checkpoint -> given``."""
    given = json.loads(json.dumps(asdict(config)))  # tuples as lists, as the checkpoint stores them
    return [f"{name}: {checkpoint.config.get(name)!r} -> {value!r}" for name, value in given.items()
            if name not in _NOT_COMPARED and checkpoint.config.get(name) != value]
