"""The command line without a database: help texts, --version, choices, logging and progress, confirmation."""

import argparse
import io
import logging
import re

import pytest

from neural_reg import cli, delete, diagram, logs


def _commands(parser, path=()):
    """(path, parser) of the parser and every (sub)command below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


def test_every_command_has_a_description_and_an_example():
    commands = list(_commands(cli.build_parser()))
    assert len(commands) > 25
    names = {" ".join(path) for path, _ in commands}
    assert {"delete", "diagram", "db drop", "status", "export scan", "ingest simulate"} <= names
    for path, parser in commands:
        text = parser.format_help()
        assert parser.description, path
        assert re.search(r"^examples?:\n  neural-reg ", text, re.M) or "neural-reg COMMAND --help" in text, path
        if path:
            assert parser.epilog and "neural-reg " + path[0] in parser.epilog, path


def test_help_shows_defaults_and_choices(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["setup-paper", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "{digits,cifar10-gray,cifar100-gray}" in out and "(default: cifar10-gray)" in out
    assert "resnet18-narrow" in out and "(default: 5)" in out
    assert "(default: None)" not in out and "(default: False)" not in out
    with pytest.raises(SystemExit):
        cli.main(["populate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "oracle.OracleStats" in out and "robustness.BrainLikeness" in out


def test_choices_read_from_the_sources_match_the_modules():
    from pipeline.classifier.resnet import ARCHITECTURES
    from pipeline.classifier.tasks import TASKS

    import schemas

    assert cli.task_names() == list(TASKS)
    assert cli.arch_names() == list(ARCHITECTURES)
    assert cli.populate_table_names() == [f"{m.__name__.split('.')[-1]}.{t}" for m in schemas.modules()
                                          for t in getattr(m, "POPULATE_ORDER", ())]


def test_version_prints_the_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"neural-reg {version('neural-reg')}")
    if (cli.ROOT / ".git").exists():
        assert re.search(r"\(commit [0-9a-f]{7,}\)$", out)


def test_progress_bars_only_on_a_terminal(monkeypatch):
    class Stream(io.StringIO):
        def __init__(self, tty):
            super().__init__()
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.delenv("NEURALREG_PROGRESS", raising=False)
    try:
        logs.set_progress(None)
        monkeypatch.setattr("sys.stderr", Stream(False))
        assert logs.progress_enabled() is False
        monkeypatch.setattr("sys.stderr", Stream(True))
        assert logs.progress_enabled() is True
        monkeypatch.setenv("NEURALREG_PROGRESS", "0")
        assert logs.progress_enabled() is False
        monkeypatch.delenv("NEURALREG_PROGRESS")
        logs.set_progress(False)  # --no-progress
        assert logs.progress_enabled() is False
    finally:
        logs.set_progress(None)


def test_the_global_options_set_the_level_and_the_progress(monkeypatch, tmp_path, capsys):
    seen = {}
    monkeypatch.setattr(cli, "_experiment", lambda args: seen.update(progress=logs.progress_enabled()) or 0)
    try:
        assert cli.main(["--log-level", "debug", "--no-progress", "experiment", "check", "demo"]) == 0
        assert logging.getLogger("neural_reg").level == logging.DEBUG and seen["progress"] is False
        assert cli.main(["experiment", "check", "demo"]) == 0
        assert logging.getLogger("neural_reg").level == logging.INFO
    finally:
        logs.set_progress(None)


def test_a_populated_key_is_one_log_line_with_time_host_table_key_and_duration():
    import platform

    stream = io.StringIO()
    logger = logs.setup("INFO", stream=stream)
    try:
        logs.log_populated(logging.getLogger("neural_reg.worker"), "oracle.OracleStats",
                           {"animal_id": "sim0", "session": 1, "scan_idx": 2}, 0.42)
        logs.log_failed(logging.getLogger("neural_reg.worker"), "oracle.OracleStats", {"animal_id": "sim0"}, 1.0,
                        ValueError("bad\nsecond line"))
    finally:
        logs.setup("INFO")  # back to sys.stderr
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {re.escape(platform.node())}:\d+ INFO populated "
                        r"oracle\.OracleStats animal_id=sim0 session=1 scan_idx=2 in 0\.4 s", lines[0])
    assert lines[1].endswith("WARNING failed oracle.OracleStats animal_id=sim0 after 1.0 s: ValueError: bad")
    assert logger.propagate is False


def test_confirmation_reads_a_terminal_and_refuses_without_one():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert delete.confirm("sure?", yes=True, stdin=io.StringIO("")) is True
    with pytest.raises(delete.DeleteError, match="not a terminal.*--yes"):
        delete.confirm("sure?", stdin=io.StringIO("y\n"))
    assert delete.confirm("sure?", stdin=Tty("y\n")) is True
    assert delete.confirm("sure?", stdin=Tty("\n")) is False
    assert delete.confirm("type it", stdin=Tty("lab\n"), expected=("lab",)) is True
    assert delete.confirm("type it", stdin=Tty("y\n"), expected=("lab",)) is False


def test_part_integrity_is_checked_before_asking():
    rows = [("recording.Scan", "`p_recording`.`scan`", 1),
            ("oracle.ScanGroup.Member", "`p_oracle`.`scan_group__member`", 1)]
    with pytest.raises(delete.DeleteError, match="ScanGroup.Member.*--part-integrity cascade"):
        delete.check_part_integrity(rows)
    delete.check_part_integrity(rows + [("oracle.ScanGroup", "`p_oracle`.`scan_group`", 1)])
    assert "total" in delete.format_cascade(rows) and "2 row(s)" in delete.format_cascade(rows)


def test_diagram_says_what_is_wrong_before_connecting(monkeypatch, tmp_path, capsys):
    assert cli.main(["diagram", str(tmp_path / "d.jpg")]) == 2
    assert "FILE.png or FILE.svg" in capsys.readouterr().err
    monkeypatch.setattr(diagram.shutil, "which", lambda name: None)
    assert cli.main(["diagram", str(tmp_path / "d.png")]) == 2
    assert "apt-get install graphviz" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
