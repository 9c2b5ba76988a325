"""The no-JavaScript read's comparison: what a crawler that runs no scripts misses."""

from __future__ import annotations

from render.check.jsparity import compare, js_only_lines


def test_text_present_without_javascript_is_no_finding() -> None:
    js_on = "Our story\nWe started   in a garage in 1999."
    js_off = "Menu\nOur story\nWe started in a garage\nin 1999.\nFooter"
    assert compare("about/index.html", "/about/", js_on=js_on, js_off=js_off) is None


def test_script_only_content_is_named_with_an_excerpt() -> None:
    js_on = "Prices\nThe basic plan costs ten euros a month.\n" + "x" * 200
    finding = compare("prices/index.html", "/prices/", js_on=js_on, js_off="Prices")
    assert finding is not None
    assert finding.path == "prices/index.html" and finding.url == "/prices/"
    assert finding.excerpt == "The basic plan costs ten euros a month."
    assert finding.missing == len("The basic plan costs ten euros a month.") + 200
    assert finding.message.startswith(f"{finding.missing} of {finding.total} characters")
    long = compare("p/index.html", "/p/", js_on="y" * 200, js_off="")
    assert long is not None and len(long.excerpt) == 80 and long.excerpt.endswith("…")


def test_short_lines_a_script_touches_are_ignored() -> None:
    # a like counter or a clock changes when islands hydrate; that is not missing content
    assert (
        js_only_lines(
            "Likes: 4\n12:31\nA long paragraph of article text.",
            "Likes: 3 A long paragraph of article text.",
        )
        == []
    )
