"""CLI conventions: choices, option groups, shared defaults, one exit status for user errors, the deprecated
``--lr``, plain progress lines, the generator listing, and documentation that names only real options."""

import importlib
import io
import re
import sys
from pathlib import Path
from typing import get_args

import pytest
import typer
from typer.testing import CliRunner

from audit.commands.cli import SEARCH_DEFAULTS, SEARCH_OPTIONS, app, search_options
from audit.commands.progress import LogLines, image_step_progress, row_progress
from audit.upsamplers import GENERATORS_DIR
from pulse_engine.search import SearchConfig

REPO = Path(__file__).resolve().parents[1]
COMMANDS = typer.main.get_command(app).commands
OPTION = re.compile(r"--[a-z][a-z0-9-]*")


def invoke(*args: str):
    return CliRunner().invoke(app, list(map(str, args)), env={"COLUMNS": "200"})  # help lines unwrapped


def options(command: str, hidden: bool = False) -> dict[str, object]:
    """Option name → click parameter of a subcommand (visible names only unless ``hidden``)."""
    return {name: param for param in COMMANDS[command].params if hidden or not getattr(param, "hidden", False)
            for name in (*param.opts, *param.secondary_opts) if name.startswith("--")}


def test_fixed_choices_are_declared_shown_and_validated():
    for command, option, choices in [("run", "--upsampler", {"pulse", "bicubic", "folder"}),
                                     ("run", "--crop", {"none", "center"}), ("upsample", "--crop", {"none", "center"}),
                                     ("run", "--sphere-radius", {"sqrt-dim", "initial"}),
                                     ("report", "--adjust", {"holm", "bh"}), ("study", "--adjust", {"holm", "bh"})]:
        assert choices <= set(get_args(options(command)[option].type_descriptor.annotation)), (command, option)
    shown = invoke("run", "--help").output
    assert "pulse|bicubic|nearest|oracle|jpeg|folder" in shown and "none|center" in shown
    refused = invoke("run", "--upsampler", "esrgan")
    assert refused.exit_code == 2 and "esrgan" in refused.output  # click's usage error, before any work


def test_run_help_groups_its_options():
    shown = invoke("run", "--help").output
    panels = ["Inputs", "Upsampler", "PULSE search", "Classifiers", "Execution", "Run folder"]
    positions = [shown.find(f"─ {panel} ─") for panel in panels]
    assert all(p > 0 for p in positions) and positions == sorted(positions), shown
    assert shown.find("--eps") > shown.find("─ PULSE search ─") > shown.find("--generator")


def test_upsample_and_run_share_their_options_and_defaults():
    upsample, run = options("upsample"), options("run")
    shared = sorted(set(upsample) & set(run) - {"--help"})
    assert {"--factor", "--crop", "--restarts", "--seed", "--steps", "--eps", "--learning-rate", "--sphere-radius",
            "--generator", "--samples", "--batch-size", "--device"} <= set(shared)
    for name in shared:
        if name == "--out":
            continue  # a run folder and an image folder: different on purpose
        a, b = upsample[name], run[name]
        assert (a.default, a.help, a.type_descriptor.annotation) == (b.default, b.help, b.type_descriptor.annotation)


def test_search_options_stand_where_the_command_asks_and_reach_it_as_one_search_config():
    toy, seen = typer.Typer(add_completion=False), {}

    @toy.command()
    @search_options
    def go(samples: int = 1, search: SearchConfig = SEARCH_DEFAULTS, device: str = "cpu") -> None:
        seen.update(samples=samples, search=search, device=device)

    assert [p.name for p in typer.main.get_command(toy).params] == ["samples", *SEARCH_OPTIONS, "device"]
    result = CliRunner().invoke(toy, ["--steps", "7", "--eps", "0.01", "--sphere-radius", "initial", "--device", "x"])
    assert result.exit_code == 0, result.output
    assert seen == {"samples": 1, "device": "x",
                    "search": SearchConfig(**{**SEARCH_DEFAULTS.__dict__, "steps": 7, "eps": 0.01,
                                              "sphere_radius": "initial"})}
    assert CliRunner().invoke(toy, []).exit_code == 0 and seen["search"] == SEARCH_DEFAULTS


def test_lr_is_a_hidden_deprecated_alias_that_warns_once(tmp_path, face_png):
    assert "--lr" not in options("upsample") and "--lr" in options("upsample", hidden=True)
    assert "--inputs-are-low-res" in invoke("upsample", "--help").output
    small = face_png("small.png", size=(8, 8))
    done = invoke("upsample", small, "--lr", "--generator", "dcgan-tiny", "--steps", "1", "--restarts", "1",
                  "--device", "cpu", "--out", tmp_path / "o")
    assert done.exit_code == 0, done.output
    assert done.output.count("--lr is deprecated") == 1 and "--inputs-are-low-res" in done.output
    folder = tmp_path / "o" / "small"
    assert (folder / "sample0.png").is_file() and not (folder / "truth.png").exists()  # searched as it is


def test_user_errors_exit_1_with_one_line(tmp_path):
    for args in (["report", tmp_path], ["upsample", tmp_path / "x.png", "--loss", "100*L7", "--generator",
                                        "dcgan-tiny"], ["run", "--restarts", "0", "--out", tmp_path / "r"]):
        done = invoke(*args)
        lines = [line for line in done.output.splitlines() if line.strip()]
        assert done.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error:"), (args, done.output)
        assert isinstance(done.exception, SystemExit), done.exception  # not a traceback


def test_generators_lists_committed_folders_with_whole_paths():
    done = invoke("generators")
    assert done.exit_code == 0
    committed = sorted(card.parent for card in GENERATORS_DIR.rglob("card.json"))
    assert len(committed) >= 20  # the three skews, skew-3x3/* and two shift families of five
    for folder in committed:
        kind = "shifted" if "-shift" in folder.parent.name else "dcgan-file"
        line = f"    {kind}:{folder}"
        assert line + "\n" in done.output, line  # present, not marked missing
    assert "…" not in done.output and "FOLDER/" not in done.output


def test_log_lines_are_rate_limited_with_rate_and_eta():
    now = [100.0]
    stream = io.StringIO()
    lines = LogLines("audit pulse", "items", stream, clock=lambda: now[0], interval=10)
    for done in range(0, 201, 4):  # 4 items every 2 s: 2 items/s
        lines(done, 200)
        now[0] += 2
    out = stream.getvalue().splitlines()
    assert out[0] == "audit pulse: 0/200 items (0%)"
    assert out[1] == "audit pulse: 20/200 items (10%), 2.00 items/s, ETA 0:01:30"
    assert out[-1] == "audit pulse: 200/200 items (100%), 2.00 items/s, took 0:01:40"
    assert len(out) == 11  # the first, then one per 10 s (every 5th update)
    lines.close()
    assert len(stream.getvalue().splitlines()) == 11  # the last line already showed the end
    quick = LogLines("q", "items", stream, clock=lambda: now[0], interval=10)
    for done in range(4):
        quick(done, 3)
    quick.close()
    assert stream.getvalue().splitlines()[11:] == ["q: 0/3 items (0%)", "q: 3/3 items (100%)"]


def test_progress_factories_write_log_lines_to_a_stream():
    now, stream = [0.0], io.StringIO()
    with row_progress("study run a", stream=stream, clock=lambda: now[0]) as update:
        update(5, 10)  # a resumed run: 5 rows were stored before
        now[0] = 20.0
        update(10, 10)
    assert stream.getvalue().splitlines() == ["study run a: 5/10 items (50%)",
                                              "study run a: 10/10 items (100%), 0.25 items/s, took 0:00:20"]
    now, stream = [0.0], io.StringIO()
    with image_step_progress(100, "PULSE search", stream=stream, clock=lambda: now[0]) as advance:
        for _ in range(3):  # restarts add work beyond the first estimate
            now[0] += 30
            advance(50)
    assert stream.getvalue().splitlines() == [
        "PULSE search: 50/100 img-steps (50%), 2 img-steps/s, ETA 0:00:30",
        "PULSE search: 100/200 img-steps (50%), 2 img-steps/s, ETA 0:01:00",
        "PULSE search: 150/200 img-steps (75%), 2 img-steps/s, ETA 0:00:30",
        "PULSE search: 150/150 img-steps (100%), 2 img-steps/s, took 0:01:30"]


# ------------------------------------------------------------------ documentation names only options that exist

DOCS = [REPO / "README.md", *sorted((REPO / "datasets").rglob("*.md")), *sorted((REPO / "datasets").rglob("*.yaml"))]
INVOCATION = re.compile(r"pulse-audit\s+([a-z][a-z-]*)|python3? -m ([\w.]+)|(pip install)")


def module_options(module: str, monkeypatch, capsys) -> set[str]:
    """The options of ``python -m module`` (its argparse ``main`` asked for --help)."""
    main = getattr(importlib.import_module(module), "main", None)
    if main is None:
        return set()
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main()
    return set(OPTION.findall(capsys.readouterr().out))


def mentions(text: str):
    """(command or None, option) for every ``--option`` in a text: the command is the invocation it follows on its
    line (``pulse-audit NAME``, ``python -m MODULE``, ``pip install``) up to a closing backtick or a comment."""
    for line in text.replace("\\\n", " ").splitlines():
        starts = list(INVOCATION.finditer(line))
        spans = [(m, m.start(), starts[i + 1].start() if i + 1 < len(starts) else len(line))
                 for i, m in enumerate(starts)]
        covered = []
        for match, begin, end in spans:
            segment = re.split(r"`| #", line[begin:end])[0]
            covered.append((begin, begin + len(segment)))
            command = match.group(1) or match.group(2) or "pip"
            yield from ((command, option) for option in OPTION.findall(segment))
        for option in OPTION.finditer(line):
            if not any(a <= option.start() < b for a, b in covered):
                yield None, option.group()


def test_readme_names_the_page_make_demo_opens():
    target = re.search(r"^demo:.*\n\t\S*pulse-audit demo .*--out (\S+)", (REPO / "Makefile").read_text(), re.M)
    assert target, "Makefile has no `demo` target running pulse-audit demo --out DIR"
    page = f"{target.group(1)}/study.html"  # run_demo_audit's front page (test_cli checks it is written)
    assert f"`make demo` opens on `{page}`" in (REPO / "README.md").read_text()


def test_docs_mention_only_options_that_exist(monkeypatch, capsys):
    known = {name: set(options(name)) for name in COMMANDS}
    everywhere = set().union(*known.values(), {"--help", "--version"})
    wrong = []
    for doc in DOCS:
        for command, option in mentions(doc.read_text()):
            if command == "pip":
                continue
            if command in known:
                valid = known[command] | {"--help"}
            elif command and "." in command:
                if command not in known:
                    known[command] = module_options(command, monkeypatch, capsys) | {"--help"}
                valid = known[command]
            else:  # prose, or `pulse-audit --help`
                valid = everywhere
            if option not in valid:
                wrong.append(f"{doc.relative_to(REPO)}: {command or 'prose'} {option}")
    assert not wrong, wrong
