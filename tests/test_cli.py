"""The render command as a user types it: output, exit codes, going on past failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from render.cli import main
from render.demo import init_host


def quick_demo(folder: Path) -> Path:
    """The demo host, with Lighthouse off so the command tests stay quick."""
    init_host(folder, demo=True)
    toml = folder / "sites" / "demo" / "blog" / "site.toml"
    toml.write_text(toml.read_text().replace("[lighthouse]\n", "[lighthouse]\nenabled = false\n"))
    return folder


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_init_demo_then_build_then_status(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["init", "--demo", "host"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "host" / "render.toml").is_file()
    assert (tmp_path / "host" / "sites" / "demo" / "blog" / "site.db").is_file()
    toml = tmp_path / "host" / "sites" / "demo" / "blog" / "site.toml"
    toml.write_text(toml.read_text().replace("[lighthouse]\n", "[lighthouse]\nenabled = false\n"))

    result = runner.invoke(main, ["build", "blog", "--config", "host/render.toml", "--out", "out"])
    assert result.exit_code == 0, result.output
    assert "demo/blog: " in result.output and "274 pages, 274 rendered, 0 reused" in result.output
    assert (tmp_path / "out" / "posts" / "index.html").is_file()

    result = runner.invoke(main, ["status", "--config", "host/render.toml"])
    assert result.exit_code == 0, result.output
    assert "demo/blog" in result.output


def test_init_refuses_to_overwrite_a_host(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "render.toml").write_text("")
    result = runner.invoke(main, ["init"])
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"Error: {tmp_path / 'render.toml'} already exists\nHint: choose an empty folder\n"
    )


def test_unknown_site_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    quick_demo(tmp_path)
    result = runner.invoke(main, ["build", "nope"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: no site 'nope' under {tmp_path / 'sites'}\nHint: 'render status' lists the sites\n"
    )


def test_missing_host_file_says_how_to_make_one(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["nightly"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: config: {tmp_path / 'render.toml'}: file not found\n"
        "Hint: run 'render init --demo' to create a host here, or pass --config PATH\n"
    )


def test_render_config_variable_picks_the_host(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick_demo(tmp_path / "elsewhere")
    monkeypatch.setenv("RENDER_CONFIG", str(tmp_path / "elsewhere" / "render.toml"))
    result = runner.invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    assert "demo/blog" in result.output


def test_a_template_error_names_template_line_and_source(runner: CliRunner, tmp_path: Path) -> None:
    quick_demo(tmp_path)
    post = tmp_path / "sites" / "demo" / "blog" / "templates" / "post.html"
    post.write_text(
        post.read_text().replace("<h1>{{ row.title }}</h1>", "<h1>{{ row.titel }}</h1>")
    )
    result = runner.invoke(main, ["build", "demo/blog"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: demo/blog: build: templates/post.html, line 6: 'dict object' has no attribute 'titel'\n"
        "    <h1>{{ row.titel }}</h1>\n"
        "Hint: nothing was published; the site has no live version yet.\n"
    )


def test_nightly_goes_on_past_a_broken_site_and_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    quick_demo(tmp_path)
    broken = tmp_path / "sites" / "acme" / "broken"
    broken.mkdir(parents=True)
    (broken / "site.toml").write_text(
        '[site]\nbase_url = "https://broken.example"\nschedule = "every night"\n'
    )
    result = runner.invoke(main, ["nightly"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: acme/broken: config: sites/acme/broken/site.toml: site.schedule: "
        "expected 5 fields (minute hour day month weekday), got 2: 'every night'\n"
    )
    assert "2 sites, 1 failed" in result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert "failed" in lines[0] and "acme/broken" in lines[0]
    assert "demo/blog" in lines[1] and "failed" not in lines[1]
    assert (tmp_path / ".render" / "builds" / "demo" / "blog").is_dir()


def test_every_command_has_help_with_an_example(runner: CliRunner) -> None:
    for name, command in main.commands.items():
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, name
        assert command.help, name
