"""One happy-path case per catalog function: the input, the exact requests the provider must
receive, and the exact output. The parametrised tests in ``test_catalog.py`` derive the
missing-credential, 4xx and retry tests from the same table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.providers import FakeProvider, Recorded

UNSET: Any = object()


@dataclass(frozen=True)
class Expect:
    """A request the provider must have received (auth headers are enforced by the fake)."""

    method: str
    path: str
    json: Any = UNSET
    form: list[tuple[str, str]] | None = None
    query: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None

    def check(self, recorded: Recorded) -> None:
        assert (recorded.method, recorded.path) == (self.method, self.path)
        if self.json is not UNSET:
            assert recorded.json == self.json
        if self.form is not None:
            assert sorted(recorded.form_pairs) == sorted(self.form)
        if self.query is not None:
            assert recorded.query == self.query
        elif recorded.method == "GET":
            assert recorded.query == {}
        if self.body is not None:
            assert recorded.body == self.body
        for name, value in self.headers.items():
            assert recorded.headers.get(name.lower()) == value, name


@dataclass(frozen=True)
class Case:
    slug: str
    provider: str
    input: dict[str, Any]
    requests: list[Expect]
    output: dict[str, Any]
    name: str = ""
    setup: Callable[[FakeProvider], None] | None = None

    @property
    def id(self) -> str:
        return self.name or self.slug


def check_requests(recorded: list[Recorded], expected: list[Expect]) -> None:
    assert [(r.method, r.path) for r in recorded] == [(e.method, e.path) for e in expected]
    for got, want in zip(recorded, expected, strict=True):
        want.check(got)


COMMS: list[Case] = [
    Case(
        slug="slack/send-message",
        provider="slack",
        input={"slackChannel": "#general", "slackMessage": "Deploy finished :rocket:"},
        requests=[
            Expect(
                "POST",
                "/api/chat.postMessage",
                json={"channel": "#general", "text": "Deploy finished :rocket:"},
                headers={"Content-Type": "application/json"},
            )
        ],
        output={"success": True, "ts": "1700000000.000100", "channel": "C0123456789"},
    ),
    Case(
        slug="resend/send-email",
        provider="resend",
        input={
            "emailFrom": "Acme <ops@acme.test>",
            "emailTo": "a@acme.test, b@acme.test",
            "emailSubject": "Weekly report",
            "emailBody": "All green.",
            "emailCc": "",
            "emailBcc": "audit@acme.test",
            "emailReplyTo": "",
            "emailScheduledAt": "",
            "emailTopicId": "topic-1",
        },
        requests=[
            Expect(
                "POST",
                "/emails",
                json={
                    "from": "Acme <ops@acme.test>",
                    "to": ["a@acme.test", "b@acme.test"],
                    "subject": "Weekly report",
                    "text": "All green.",
                    "bcc": ["audit@acme.test"],
                },
            )
        ],
        output={"success": True, "data": {"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}},
    ),
]

CASES: list[Case] = [*COMMS]
