"""Train the paper's 784-784-10 network in numpy (Adam, cross-entropy, 50k/10k split, seeded).

By default the recipe of the shipped weights is repeated (read from their metadata), so
`qslab train` retrains them; every option overrides one field of that recipe. Noise-aware
training runs the secure forward pass with the client's homodyne noise at photon budgets drawn
log-uniformly between --photons-min and --photons-max, with the exact gradient.

After every epoch a checkpoint (weights, Adam's state, the generator, the history) is written beside
--out as NAME.checkpoint.npz and removed once the weights are written. Interrupted (Ctrl-C), the run
says where it stopped; `qslab train --resume --out FILE` continues from the checkpoint, with its recipe,
to the weights the uninterrupted run would have written.
"""

from __future__ import annotations

HELP = "retrain the network (plain or noise-aware) and write weights + metadata"

OVERRIDES = {  # option -> (TrainingConfig field, argparse type arguments, help)
    "epochs": ("epochs", dict(minimum=1, integer=True, unit="passes"), "passes over the 50k training split"),
    "batch-size": ("batch_size", dict(minimum=1, integer=True, unit="images"), "images per Adam step"),
    "learning-rate": ("learning_rate", dict(minimum=0.0, min_open=True, unit="Adam step size"), "Adam step size"),
    "weight-decay": ("weight_decay", dict(minimum=0.0, unit="per step, in units of the learning rate"), "decoupled weight decay"),
    "seed": ("seed", dict(minimum=0, integer=True, unit="seed"), "initial weights, minibatch order and training noise"),
    "hidden-units": ("hidden_units", dict(minimum=1, integer=True, unit="neurons"), "width of the hidden layer"),
    "shift-px": ("shift_px", dict(minimum=0, maximum=8, integer=True, unit="pixels"), "random translation of training images"),
    "gain": ("gain", dict(minimum=1.0, min_open=True, unit="linear power gain"), "client amplifier gain G during noise-aware training"),
    "photons-min": ("photons_min", dict(minimum=0.0, min_open=True, unit="photons per mode"), "lowest training photon budget mu"),
    "photons-max": ("photons_max", dict(minimum=0.0, min_open=True, unit="photons per mode"), "highest training photon budget mu"),
    "train-subset": ("n_train_subset", dict(minimum=1, integer=True, unit="images"), "train on the first N training images only"),
}


def register(parser) -> None:
    from qslab.sequences.commands.cli_io import number

    for option, (field, kwargs, text) in OVERRIDES.items():
        unit = kwargs.get("unit", "")
        parser.add_argument(f"--{option}", dest=field, type=number(option, kwargs.get("minimum"), kwargs.get("maximum"),
                                                                   min_open=kwargs.get("min_open", False),
                                                                   integer=kwargs.get("integer", False), unit=unit),
                            metavar=option.upper(),
                            help=f"{text} ({unit + '; ' if unit and unit not in text else ''}default: the shipped recipe)")
    parser.add_argument("--lr-schedule", dest="lr_schedule", choices=("constant", "cosine"), help="learning-rate schedule")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--noise-aware", dest="noise_aware", action="store_const", const=True, help="train through the secure pass")
    group.add_argument("--plain", dest="noise_aware", action="store_const", const=False, help="the paper's plain digital training")
    parser.add_argument("--out", default="qslab-output/weights.npz", metavar="FILE.npz",
                        help="where to write the weights (default qslab-output/weights.npz; use with --weights elsewhere)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint beside --out (NAME.checkpoint.npz, written after every "
                             "epoch) with the recipe it was started with; options given must agree with it")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last stdout line")


def recipe(args):
    """The shipped recipe (with --resume: the checkpoint's) with the options given on the command line applied."""
    from dataclasses import fields, replace

    from qslab.analysis.network import load_weights
    from qslab.analysis.training import TrainingConfig
    from qslab.analysis.training_checkpoint import checkpoint_path, config_differences, load_checkpoint
    from qslab.sequences.commands.cli_io import UsageError

    known = {f.name for f in fields(TrainingConfig)}
    checkpoint = None
    if getattr(args, "resume", False):
        try:
            checkpoint = load_checkpoint(checkpoint_path(args.out))
        except ValueError as error:
            raise UsageError(f"--resume: {error}") from None
        start = checkpoint.config
    else:
        start = load_weights()[1].get("config", {})
    changes = {f: getattr(args, f) for f in known if getattr(args, f, None) is not None}
    changes["progress"] = not args.json
    try:
        config = replace(TrainingConfig(**{k: v for k, v in start.items() if k in known}), **changes)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    differences = config_differences(config, checkpoint) if checkpoint is not None else []
    if differences:
        raise UsageError(f"--resume: the checkpoint {checkpoint_path(args.out)} was started with other options "
                         f"({'; '.join(differences)}); give the same ones or none")
    return config


def run(args) -> int:
    import sys
    from dataclasses import asdict
    from pathlib import Path

    from qslab.analysis.training import train_and_save
    from qslab.analysis.training_checkpoint import checkpoint_path, load_checkpoint
    from qslab.sequences.commands.cli_io import print_json_last

    config = recipe(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    checkpoint = checkpoint_path(args.out)
    try:
        result = train_and_save(args.out, config, resume=args.resume)
    except KeyboardInterrupt:
        done = load_checkpoint(checkpoint).epochs_done if checkpoint.is_file() else 0
        where = (f"{done} of {config.epochs} epochs are in {checkpoint}: continue with `qslab train --resume --out "
                 f"{args.out}`" if done else "before the first epoch ended: nothing to resume")
        print(f"qslab train: interrupted; {where}", file=sys.stderr)
        return 130
    summary = {"file": args.out, "config": asdict(config),
               "test_accuracy_digital": result.metadata["test_accuracy_digital"],
               "val_accuracy_digital": result.history[-1].get("val_accuracy_digital") if result.history else None}
    print(f"weights written to {args.out}; digital test accuracy {100 * summary['test_accuracy_digital']:.2f} %")
    if args.json:
        print_json_last(summary)
    return 0
