# %% [markdown]
# # Analysing a lab session with qslab's API
#
# A notebook in the percent format (open it in Jupyter with jupytext, or in VS Code), and a plain script:
#
#     python docs/analysis_example.py [SESSION.h5] [OUT_DIR]
#
# Without a session file it first runs a short session on the virtual bench (about 20 s, calibrations
# included). It opens the session as xarray Datasets, plots the accuracy per batch, looks at the
# verification samples of layer 1, and replays the session with another failure probability.
# The tests run it (tests/test_analyst_api.py); its last line is a JSON summary they check.

# %%
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a file, not a window; drop this line in a notebook
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import qslab  # noqa: E402

out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("qslab-output") / "analysis-example"
out.mkdir(parents=True, exist_ok=True)
if len(sys.argv) > 1:
    path = Path(sys.argv[1])
else:  # a short bench session: 20 images in 4 batches
    from qslab.sequences.cli import main

    main(["session", "--images", "20", "--batch-images", "5", "--out", str(out / "sessions")])
    path = max((out / "sessions").glob("session-*.h5"))

# %% [markdown]
# ## The session as a Dataset
# Dimensions `image`, `pixel`, `batch` and `layer`; the settings and results are attributes with dotted
# names (`settings.mu`, `results.accuracy`), and whole as JSON (`settings_json`, `results_json`).

# %%
session = qslab.open_session(path)
print(session.attrs["run_id"], session.attrs["status"], dict(session.sizes))
print("mu", session.attrs["settings.mu"], "photons/mode;  recorded accuracy", session.attrs["results.accuracy"])

# %% [markdown]
# ## Accuracy per batch
# Each image knows its batch (`image_batch`), so a groupby gives the accuracy of every acquisition.

# %%
per_batch = session.correct.groupby("image_batch").mean()
overall = float(session.correct.mean())
low, high = session.attrs["results.accuracy_ci95"]
figure, axes = plt.subplots(figsize=(6, 3.5), layout="constrained")
axes.plot(per_batch.image_batch, 100 * per_batch, "o-", label="accuracy per batch")
axes.axhline(100 * overall, color="k", linestyle="--", label=f"session: {100 * overall:.1f} %")
axes.axhspan(100 * low, 100 * high, color="0.85", label="session's 95 % interval")
axes.set(xlabel="batch", ylabel="accuracy (%)", title=f"session {session.attrs['run_id']}")
axes.xaxis.get_major_locator().set_params(integer=True)
axes.legend(loc="lower left")
figure.savefig(out / "accuracy_per_batch.png", dpi=100)
print("accuracy per batch (%):", np.round(100 * per_batch.values, 1))

# %% [markdown]
# ## Layer 1's verification samples
# A sample is one (image, verified row) pair; `sent_snu` and `returned_snu` run over its modes, in SNU.
# The regression slope of returned on sent is the amplitude transmittance the server's test starts from.

# %%
layer = qslab.open_session(path, layer=0)
sent, returned = layer.sent_snu.values.ravel(), layer.returned_snu.values.ravel()
slope = float(np.dot(sent, returned) / np.dot(sent, sent))
print(f"layer 1: {layer.sizes['sample']} samples x {layer.sizes['mode']} modes, P measured in "
      f"{float((layer.measured_quadrature == 'P').mean()):.0%}; slope returned/sent {slope:.4f} "
      f"({layer.sent_snu.attrs['units']} per {layer.returned_snu.attrs['units']})")

# %% [markdown]
# ## Replay with another failure probability
# `qslab.replay` returns a typed `ReplayResult` with the numbers `qslab replay --json` prints;
# `changes` lists the compared results that differ from the recorded ones.

# %%
recorded = qslab.replay(path)
looser = qslab.replay(path, failure_probability=1e-6)
print(f"weight leakage: {recorded.weight_leakage_bits_per_mode:.4g} bit/mode at the session's failure probability "
      f"{recorded.failure_probability:.3g}, {looser.weight_leakage_bits_per_mode:.4g} at {looser.failure_probability:.3g}")
for key, change in looser.changes.items():
    print(f"  changed {key}: {change.recorded} -> {change.replayed}")

# %%
print(json.dumps({"file": str(path), "accuracy_per_batch": per_batch.values.tolist(), "slope": slope,
                  "replayed_changes": sorted(recorded.changes),
                  "weight_leakage_bits_per_mode": recorded.weight_leakage_bits_per_mode,
                  "looser_weight_leakage_bits_per_mode": looser.weight_leakage_bits_per_mode,
                  "figure": str(out / "accuracy_per_batch.png")}))
