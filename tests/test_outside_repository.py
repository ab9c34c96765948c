"""qslab as an installed tool: the packaged configs, `qslab init`, a session in an empty directory with its log,
help on a bare `qslab`, and "did you mean" for mistyped commands, choices and options (still one line)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qslab.analysis.recording import SessionFile, is_run_id
from qslab.sequences.config import loads_config
from qslab.sequences.starter_config import TEMPLATES, template_text

from cli_capture import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_packaged_configs_are_the_repository_examples(template):
    """One source: the documented files at the repository's top are links to what an installed qslab ships."""
    top = ROOT / TEMPLATES[template]
    assert top.is_symlink() and top.resolve() == (ROOT / "sequences" / TEMPLATES[template]).resolve()
    assert template_text(template) == top.read_text(encoding="utf-8")
    loads_config(template_text(template), template)


def test_init_writes_a_commented_config_and_never_overwrites(tmp_path):
    target = tmp_path / "new" / "lab"
    code, out, err = cli("init", str(target))
    assert (code, err) == (0, "") and "lab_config.toml" in out
    written = (target / "lab_config.toml").read_text()
    assert written == template_text("bench") and written.count("\n#") > 50
    (target / "lab_config.toml").write_text("# mine\n")
    code, out, err = cli("init", str(target), "--hardware")
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and "exists: not overwritten" in err
    assert (target / "lab_config.toml").read_text() == "# mine\n"
    assert cli("init", str(tmp_path / "hw"), "--hardware")[0] == 0
    assert (tmp_path / "hw" / "lab_config.toml").read_text() == template_text("hardware")


def test_init_and_a_session_in_an_empty_directory_outside_the_repository(tmp_path):
    """The user's path: a fresh directory, `qslab init`, `qslab session --images 20`; the session's log is kept."""
    env = {**os.environ, "MPLBACKEND": "Agg", "QSLAB_FIGURES": "on"}  # the user's default: figures drawn
    env.pop("QSLAB_CALIBRATION_DIR", None)
    qslab = [sys.executable, "-m", "qslab"]
    init = subprocess.run([*qslab, "init"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    session = subprocess.run([*qslab, "session", "--images", "20", "--json", "--log-level", "debug"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=900)
    assert session.returncode == 0, session.stdout[-2000:] + session.stderr[-2000:]
    import json

    result = json.loads(session.stdout.splitlines()[-1])
    assert result["images"] == 20 and result["verified"] is True and is_run_id(result["run_id"])
    path = tmp_path / result["file"]
    assert path == tmp_path / "qslab-output" / "sessions" / f"session-{result['run_id']}.h5"
    with SessionFile.open(path) as recorded:
        assert recorded.run_id == result["run_id"] and recorded.status == "complete"
    log = path.with_suffix(".log").read_text()
    assert f"qslab session {result['run_id']} starting" in log and "complete: " in log
    assert " DEBUG " in log  # --log-level debug: the instruments' traffic is in it
    assert (path.with_suffix("") / "session.png").is_file()


def test_session_without_a_config_here_uses_the_packaged_one_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("session", "--images", "0")  # refused before anything runs
    assert code == 2 and "images" in err
    from qslab.sequences.commands.cli_io import station_config

    class Args:
        config = None

    with contextlib.redirect_stderr(io.StringIO()) as err:
        config = station_config(Args, "session")
    assert config.uses_bench and "packaged virtual-bench config" in err.getvalue()
    Args.config = "missing.toml"
    with pytest.raises(Exception, match="cannot read the station config"):
        station_config(Args, "session")


def test_security_budget_without_a_config_here_uses_the_packaged_one_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("security-budget")
    assert code == 2 and "packaged virtual-bench config" in err and "cannot read" not in err, err
    assert "no 'photons' calibration record" in err.splitlines()[-1]


def test_a_bare_qslab_prints_help():
    code, out, err = cli()
    assert code == 0 and err == "" and out.startswith("usage: qslab") and "session" in out and "init" in out


@pytest.mark.parametrize(("argv", "hint"), [
    (["sesion"], "(did you mean session or sessions?)"),
    (["calibrate", "modulator"], "(did you mean modulators?)"),
    (["session", "--imgaes", "20"], "(did you mean --images"),
    (["session", "--seeed=3"], "(did you mean --seed?)"),
    (["leakage", "--mu", "1", "--gian", "1.2"], "(did you mean --gain?)"),
])
def test_mistyped_commands_choices_and_options_get_a_suggestion_on_one_line(argv, hint):
    code, out, err = cli(*argv)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and hint in err, err


def test_nothing_close_gets_no_suggestion():
    code, _, err = cli("session", "--zzzzzz")
    assert code == 2 and "did you mean" not in err and "unrecognized arguments: --zzzzzz" in err
