"""A provider's error body (cut at 500 characters) and its message (cut at 300) are scrubbed
before they are cut: a key the provider echoes across either cut leaves no prefix behind."""

from __future__ import annotations

from shared.contract import ErrorCode
from tests.catalog.conftest import Invoke, StartFake
from tests.fakes.providers import CREDENTIALS
from workers.providers import BODY_EXCERPT_CHARS

GITHUB_INPUT = {"owner": "a", "repo": "b", "issueNumber": 1}
MESSAGE_CHARS = 300  # workers/providers.py
KEY = CREDENTIALS["github"]["GITHUB_TOKEN"]


async def test_a_key_straddling_the_body_excerpt_cut_leaves_no_prefix(
    fake: StartFake, invoke: Invoke
) -> None:
    api = await fake("github")
    api.fail_next(422, text="x" * (BODY_EXCERPT_CHARS - 5) + KEY + "z" * 100)
    result = await invoke("github/get-issue", GITHUB_INPUT)
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    body = result.error.details["body"]
    assert body == ("x" * (BODY_EXCERPT_CHARS - 5) + "***" + "z" * 100)[:BODY_EXCERPT_CHARS]
    assert KEY[:4] not in result.model_dump_json()


async def test_a_key_straddling_the_message_cut_leaves_no_prefix(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("github")
    api.fail_next(422, {"message": "m" * (MESSAGE_CHARS - 5) + KEY})
    result = await invoke("github/get-issue", GITHUB_INPUT)
    assert result.error is not None
    assert result.error.message.endswith("m" * (MESSAGE_CHARS - 5) + "***")
    assert KEY[:4] not in result.model_dump_json()
