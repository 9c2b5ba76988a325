"""The front proxy's decision: crawlers and logged-out visitors to the mirror, sessions to the app."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from render.serve.routing import CRAWLER_TOKENS, Target, is_crawler, route_request

ROUTE_CONF = Path(__file__).resolve().parent.parent / "ovh" / "nginx" / "route.conf"

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BINGBOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CUBOT_PHONE = "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 Chrome/120 Mobile"

# (user agent, cookies, method) -> where the request goes; test_mirror_nginx sends the same
# table through route.conf in a real nginx.
CASES: list[tuple[str | None, dict[str, str], str, Target]] = [
    (FIREFOX, {}, "GET", Target.mirror),  # a logged-out newcomer
    (FIREFOX, {"session": "s3cr3t"}, "GET", Target.app),  # a logged-in person
    (FIREFOX, {"session": ""}, "GET", Target.mirror),  # a logout that empties the cookie
    (FIREFOX, {"theme": "dark"}, "GET", Target.mirror),  # other cookies do not count
    (FIREFOX, {}, "HEAD", Target.mirror),
    (FIREFOX, {}, "POST", Target.app),  # a login form
    (GOOGLEBOT, {}, "GET", Target.mirror),
    (GOOGLEBOT, {"session": "s3cr3t"}, "GET", Target.mirror),  # a crawler never gets a session view
    (BINGBOT, {}, "HEAD", Target.mirror),
    (BINGBOT, {}, "POST", Target.app),  # the mirror cannot answer a POST
    (CUBOT_PHONE, {"session": "s3cr3t"}, "GET", Target.app),  # a phone named *bot is a person
    (None, {}, "GET", Target.mirror),
    (None, {"session": "s3cr3t"}, "GET", Target.app),
]


@pytest.mark.parametrize(("user_agent", "cookies", "method", "target"), CASES)
def test_route_request(
    user_agent: str | None, cookies: dict[str, str], method: str, target: Target
) -> None:
    assert route_request(user_agent=user_agent, cookies=cookies, method=method) is target


def test_the_session_cookie_name_is_a_parameter() -> None:
    cookies = {"sid": "abc"}
    assert route_request(user_agent=FIREFOX, cookies=cookies) is Target.mirror
    assert route_request(user_agent=FIREFOX, cookies=cookies, cookie_name="sid") is Target.app


@pytest.mark.parametrize(
    "agent",
    [
        GOOGLEBOT,
        "Googlebot-Image/1.0",
        "Mozilla/5.0 (compatible; YandexBot/3.0)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2)",
        "Mozilla/5.0 (compatible; archive.org_bot +http://archive.org/details/archive.org_bot)",
    ],
)
def test_known_crawlers_are_recognized(agent: str) -> None:
    assert is_crawler(agent)


@pytest.mark.parametrize("agent", [FIREFOX, CUBOT_PHONE, "", None, "curl/8.5.0"])
def test_people_and_tools_are_not_crawlers(agent: str | None) -> None:
    assert not is_crawler(agent)


def test_route_conf_lists_the_same_crawlers() -> None:
    text = ROUTE_CONF.read_text()
    match = re.search(r'"~\*\(([^)"]+)\)" render_mirror;', text)
    assert match is not None, "route.conf has no crawler map entry"
    tokens = [t.replace("\\.", ".") for t in match.group(1).split("|")]
    assert tokens == list(CRAWLER_TOKENS)
    assert "$cookie_session" in text  # the cookie routing.SESSION_COOKIE names
