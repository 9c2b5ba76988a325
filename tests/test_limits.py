"""CPU, memory and output limits: a hostile template fails its own site, and nothing else.

The sandbox bounds nothing about resources and Jinja folds constant
expressions while compiling, so templates compile and render in worker
processes with a CPU-time and an address-space limit. These tests set the
limits low ([limits] in render.toml) to stay fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sitekit import Host, SiteSpec, changes, html, listing, make_host

LIMITS = {
    "template_cpu_seconds": 1,
    "template_memory_mb": 256,
    "page_max_bytes": 200_000,
}
CPU_HINT = "Hint: simplify the template's loops, or raise [limits] template_cpu_seconds\n"
MEMORY_HINT = "Hint: the render process's memory is limited by [limits] template_memory_mb\n"
NO_LIVE_HINT = "Hint: nothing was published; the site has no live version yet.\n"

LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
DOUBLING = (
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s|length }}"
)
POWERS = "{{ (((((9 ** 64) ** 64) ** 64) ** 64) ** 64) ** 64 }}"


def _site(line: str) -> SiteSpec:
    """A site whose index.html has ``line`` as its line 2."""
    return SiteSpec(templates={"index.html": "<main>\n" + line + "\n</main>\n"})


def _host(tmp_path: Path, line: str) -> Host:
    return make_host(tmp_path, limits=LIMITS, sites={"acme/blog": _site(line)})


def _build(host: Host, tmp_path: Path) -> tuple[int, str]:
    before = listing(tmp_path, skip=[host.state_dir])
    result = host.cli("build", "acme/blog")
    assert changes(before, listing(tmp_path, skip=[host.state_dir])) == []
    return result.exit_code, result.stderr


def _error(message: str, source: str | None, hint: str) -> str:
    detail = f"    {source}\n" if source else ""
    return f"Error: acme/blog: build: {message}\n{detail}{hint}"


def test_huge_constant_powers_stop_at_the_cpu_limit_naming_the_template(
    tmp_path: Path,
) -> None:
    # Each ** is at most 64, but five in a row make a number of 3.4e9 bits: the CPU
    # limit stops it, either by SIGXCPU between two operations or, when the signal
    # cannot interrupt one long multiplication, by the parent killing the worker.
    code, stderr = _build(_host(tmp_path, POWERS), tmp_path)
    assert stderr in {
        _error(
            "templates/index.html, line 2: rendering / ran past its limit of 1 CPU seconds",
            POWERS,
            CPU_HINT,
        ),
        _error(
            "rendering / (template index.html) ran past its limit of 1 CPU seconds and was stopped",
            None,
            CPU_HINT,
        ),
    }
    assert code == 1


def test_one_long_call_the_signal_cannot_interrupt_is_stopped_by_the_parent(
    tmp_path: Path,
) -> None:
    # Sorting 100,000 references to two 1 MB strings that differ only at the end is
    # one C call (SIGXCPU waits for it to return), using little memory: the parent
    # sees the worker's CPU time pass the limit and kills it. The sort filter's key
    # function runs in Python first, for one item after another; with a short list
    # that phase ends long before the signal can come (a million items made it
    # last about a second, and the signal sometimes landed in it).
    source = "{{ (['a' * 1000000 ~ 'b', 'a' * 1000000 ~ 'a'] * 50000)|sort(case_sensitive=true)|length }}"
    code, stderr = _build(_host(tmp_path, source), tmp_path)
    assert stderr == _error(
        "rendering / (template index.html) ran past its limit of 1 CPU seconds and was stopped",
        None,
        CPU_HINT,
    )
    assert code == 1


OVER_A_LIMIT = [
    pytest.param(
        LOOPS,
        "rendering / ran past its limit of 1 CPU seconds",
        CPU_HINT,
        id="nested-huge-loops-stop-at-the-cpu-limit",
    ),
    # huge constant arithmetic is refused before it allocates
    pytest.param(
        "{{ 9 ** (9 ** 9) }}",
        "refused by the sandbox: exponent 387420489 is over the limit of 64",
        NO_LIVE_HINT,
        id="a-huge-power-is-refused",
    ),
    pytest.param(
        "{{ 'a' * 10**10 }}",
        "refused by the sandbox: repeating a sequence to 10000000000 items is over the limit",
        NO_LIVE_HINT,
        id="a-huge-string-repeat-is-refused",
    ),
    pytest.param(
        "{{ [0] * 10**9 }}",
        "refused by the sandbox: repeating a sequence to 1000000000 items is over the limit",
        NO_LIVE_HINT,
        id="a-huge-list-repeat-is-refused",
    ),
    pytest.param(
        "{{ 10**7 * 'ab' }}",
        "refused by the sandbox: repeating a sequence to 20000000 items is over the limit",
        NO_LIVE_HINT,
        id="a-huge-repeat-with-the-count-first-is-refused",
    ),
    # allocating past the memory limit
    pytest.param(
        DOUBLING,  # the namespace is mutable in the sandbox
        "rendering / ran out of memory",
        MEMORY_HINT,
        id="a-string-doubled-runs-out-of-memory",
    ),
    pytest.param(
        "{% macro d(s, n) %}{{ d(s ~ s, n - 1) if n else s|length }}{% endmacro %}{{ d('x', 40) }}",
        "rendering / ran out of memory",
        MEMORY_HINT,
        id="a-string-doubled-by-a-recursive-macro-runs-out-of-memory",
    ),
    pytest.param(
        "{{ 'x'|center(2000000000) }}",  # folded while compiling: the compile runs in the worker too
        "rendering / ran out of memory",
        MEMORY_HINT,
        id="a-huge-center-runs-out-of-memory",
    ),
    pytest.param(
        "{{ '%0999999999d' % 1 }}",  # folded while compiling
        "rendering / ran out of memory",
        MEMORY_HINT,
        id="a-huge-percent-format-runs-out-of-memory",
    ),
    pytest.param(
        "{{ '{:>999999999}'.format(1) }}",
        "rendering / ran out of memory",
        MEMORY_HINT,
        id="a-huge-format-width-runs-out-of-memory",
    ),
    pytest.param(
        "{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}",
        "rendering / recursed too deeply",
        NO_LIVE_HINT,
        id="endless-recursion-fails",
    ),
]


@pytest.mark.parametrize(("source", "message", "hint"), OVER_A_LIMIT)
def test_a_template_over_a_limit_fails_naming_the_template_and_line(
    tmp_path: Path, source: str, message: str, hint: str
) -> None:
    code, stderr = _build(_host(tmp_path, source), tmp_path)
    assert stderr == _error(f"templates/index.html, line 2: {message}", source, hint)
    assert code == 1


def test_a_page_over_the_output_cap_fails_naming_the_template(tmp_path: Path) -> None:
    source = "{% for i in range(100000) %}<p>{{ i }} {{ 'x' * 50 }}</p>{% endfor %}"
    code, stderr = _build(_host(tmp_path, source), tmp_path)
    assert stderr == (
        "Error: acme/blog: build: templates/index.html: page / is over the limit of 200000 characters\n"
        "Hint: raise [limits] page_max_bytes, or paginate the route\n"
    )
    assert code == 1


def test_nightly_goes_on_past_sites_that_hit_their_limits_and_exits_1(
    tmp_path: Path,
) -> None:
    sites = {
        "acme/loops": _site(LOOPS),
        "acme/memory": _site(DOUBLING),
        "zed/good": SiteSpec(templates={"index.html": html("<p>{{ site.name }} is fine</p>")}),
    }
    host = make_host(tmp_path, limits=LIMITS, sites=sites)
    pid = os.getpid()
    result = host.cli("nightly")
    assert os.getpid() == pid  # the parent is the same, living process
    assert result.stderr == (
        "Error: acme/loops: build: templates/index.html, line 2: rendering / ran past its limit of 1 CPU seconds\n"
        f"    {LOOPS}\n"
        + CPU_HINT
        + "Error: acme/memory: build: templates/index.html, line 2: rendering / ran out of memory\n"
        f"    {DOUBLING}\n" + MEMORY_HINT
    )
    assert result.exit_code == 1
    table = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in result.stdout.splitlines()
        if line.startswith("│") and line.split("│")[1].strip()
    }
    assert table == {
        "acme/loops": "failed",
        "acme/memory": "failed",
        "zed/good": "published",
    }
    assert "render nightly: 3 sites, 2 failed" in result.stdout
    # the good site was really built after the two failures
    good = host.cli("build", "zed/good", "--out", str(tmp_path / "good"))
    assert good.exit_code == 0, good.output
    assert "<p>good is fine</p>" in (tmp_path / "good" / "index.html").read_text()
