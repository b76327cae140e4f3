"""User strings are text everywhere: never rich markup, no terminal control characters on a
terminal, no raw HTML in Markdown (issue 8)."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console

from cli_driver import run_cli
from mnistlab.report.progress import RichReporter
from mnistlab.report import write_report
from mnistlab.util.safetext import REPLACEMENT, clean, markdown, safe_console
from mnistlab.runs.store import RunStore
from test_report import EPOCHS, GOOD_HISTORY, add_run, model_spec

ESC = "\x1b"
HOSTILE_ID = "[/]m-[bold red]BOOM[/bold red]<script>x</script> $\\frac{$"  # '$': not mathtext in the plots
HOSTILE_DESCRIPTION = f"[bold red]BOOM[/bold red] {ESC}]0;retitled\a {ESC}[2J cleared\rover \u202etxt.exe <script>alert(1)</script>"


def test_clean_replaces_control_characters_and_keeps_text():
    assert clean("plain [b]text[/b] ünïcödé") == "plain [b]text[/b] ünïcödé"
    assert clean(f"a{ESC}[2Jb\rc\u202ed\x9be") == f"a{REPLACEMENT}[2Jb{REPLACEMENT}c{REPLACEMENT}d{REPLACEMENT}e"
    assert clean("two\nlines\tand tab") == "two\nlines\tand tab"


def test_markdown_escapes_html():
    assert markdown("<script>alert(1)</script> & co") == "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co"


def test_safe_console_prints_markup_literally_and_strips_escapes():
    out = io.StringIO()
    console = safe_console(file=out, force_terminal=True, width=200, highlight=False)
    console.print(HOSTILE_DESCRIPTION)
    console.print("[/]")  # would raise MarkupError on a markup console
    text = out.getvalue()
    assert "[bold red]BOOM[/bold red]" in text and "[/]" in text
    assert "retitled" in text and "]0;" in text and ESC not in text  # no style here: any ESC would be the user's
    assert "\r" not in text and "\u202e" not in text


def test_progress_bar_takes_any_label():
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, force_terminal=True, width=200), label=f"{HOSTILE_ID} {{task.fields}} ")
    reporter.start_epoch(1, 1, 2)
    reporter.step(2, 2, torch.tensor(1.0), torch.tensor(1), 2)
    reporter.end_epoch(1, 1, {"seconds": 0.1, "loss": 0.5, "acc": 0.5, "val_loss": 0.5, "val_acc": 0.5})
    assert "[bold red]BOOM[/bold red]" in out.getvalue() and "{task.fields}" in out.getvalue()


@pytest.fixture()
def hostile_store(tmp_path):
    root = tmp_path / "runs"
    labels = np.arange(100, dtype=np.uint8) % 10
    with RunStore(root) as store:
        store.save_experiment("e", {"name": "e", "description": HOSTILE_DESCRIPTION, "dataset": "synthetic",
                                    "protocol": "split", "models": [HOSTILE_ID, "plain"], "seeds": [0]})
        for model, errors in ((HOSTILE_ID, 3), ("plain", 5)):
            run_id = add_run(store, "e", model, HOSTILE_DESCRIPTION, None, 0, "completed", errors, GOOD_HISTORY, labels)
        store.fail_run(store.ensure_run("e", "failing", {"model": model_spec("failing", "x")}, 1, "synthetic", "split",
                                        EPOCHS).id, f"boom {HOSTILE_DESCRIPTION}")
    assert run_id
    return root


@pytest.mark.parametrize("args", [("ls",), ("ls", "e"), ("show", "1"), ("show", "3"), ("compare", "1", "2"),
                                  ("compare", HOSTILE_ID, "plain", "--experiment", "e")])
def test_store_commands_print_user_strings_as_text(hostile_store, args):
    result = run_cli(*args, "--store", str(hostile_store))
    assert result.exit_code == 0, result
    output = result.stdout
    assert ESC not in output and "\r" not in output and "\u202e" not in output
    if args != ("ls",) and args != ("show", "3"):
        assert "[/]m-" in output


def test_an_error_quoting_a_user_string_is_printed_literally(hostile_store):
    result = run_cli("compare", "[/]nope[bold]", "plain", "--experiment", "e", "--store", str(hostile_store))
    assert result.exit_code == 2 and len(result.error_lines) == 1
    assert "[/]nope[bold]" in result.stderr and "Traceback" not in result.stderr


def test_markdown_report_has_no_raw_html_from_user_strings(hostile_store, tmp_path):
    with RunStore(hostile_store) as store:
        paths = write_report(store, "e", tmp_path / "report")
    text = paths.markdown.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert ESC not in text
    assert "<script>alert(1)</script>" not in paths.html.read_text()


class _VisibleText(HTMLParser):
    """The text a browser shows for an HTML fragment (entities decoded once), and the tags it holds."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)

    def handle_data(self, data) -> None:
        self.text.append(data)


def _rendered(markdown_text: str) -> _VisibleText:
    from markdown_it import MarkdownIt

    page = _VisibleText()
    # CommonMark with raw HTML allowed, as GitHub and most viewers render it: a user string's HTML that
    # survived unescaped would come out as a tag here.
    page.feed(MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown_text))
    return page


def test_markdown_report_renders_user_text_literally_and_escapes_once(hostile_store, tmp_path):
    with RunStore(hostile_store) as store:
        paths = write_report(store, "e", tmp_path / "report")
    page = _rendered(paths.markdown.read_text())
    shown = "".join(page.text)
    assert "script" not in page.tags
    # Escaped once: the reader sees the user's "<script>" as text, and no entity ("&lt;", "&amp;lt;") as text.
    assert "<script>x</script>" in shown
    assert re.search(r"&(?:[a-z]+|#[0-9]+|#x[0-9a-f]+);", shown, re.IGNORECASE) is None, \
        re.findall(r".{30}&[a-z#0-9]+;.{10}", shown)
    conclusions = shown[shown.index("Conclusions"):shown.index("Comparison")]
    assert HOSTILE_ID.split("<")[0] in conclusions and "<script>x</script>" in conclusions


def test_summary_and_run_take_hostile_ids(tmp_path, tiny_data_dir):
    spec = {"id": HOSTILE_ID, "description": HOSTILE_DESCRIPTION,
            "layers": [{"type": "Flatten", "name": f"flat[/]{ESC}[2J"}, {"type": "Dense", "units": 10, "activation": "softmax"}],
            "training": {"batch_size": 64, "epochs": 1}}
    spec_file = tmp_path / "hostile.yaml"
    spec_file.write_text(yaml.safe_dump(spec, allow_unicode=True))
    summary = run_cli("summary", spec_file)
    assert summary.exit_code == 0, summary
    assert HOSTILE_ID in summary.stdout and ESC not in summary.stdout
    experiment = {"name": "hostile", "dataset": str(tiny_data_dir), "defaults": {"device": "cpu", "train_limit": 64},
                  "seeds": [0], "models": [{"spec": spec}]}
    exp_file = tmp_path / "hostile-exp.yaml"
    exp_file.write_text(yaml.safe_dump(experiment, allow_unicode=True))
    result = run_cli("run", exp_file, "--store", tmp_path / "store", "--no-report")
    assert result.exit_code == 0, result
    assert HOSTILE_ID in result.stdout and ESC not in result.stdout


def _help_texts(command, path="mnistlab"):
    """Every help string of a click command tree: commands' docstrings and options' help."""
    yield path, command.help or ""
    for param in command.params:
        yield f"{path} {param.name}", getattr(param, "help", None) or ""
    if hasattr(command, "commands"):  # a group (Typer may carry its own click)
        for name, sub in command.commands.items():
            yield from _help_texts(sub, f"{path} {name}")


def test_every_help_string_survives_rich_markup():
    """Typer renders help through rich markup: a "[...]" in a help string (a default, a list of
    choices) would vanish from --help. Every one must read the same after markup."""
    import typer
    from rich.text import Text

    from mnistlab.cli.app import app

    texts = list(_help_texts(typer.main.get_command(app)))
    assert len(texts) > 50  # the walk reached the subcommands and their options
    changed = [where for where, text in texts if Text.from_markup(text).plain != text]
    assert changed == []
