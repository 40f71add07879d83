"""The console's JSON API (and the pages rendering the same data) on a real broker, database
and worker: every endpoint, with bad input."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.console.conftest import Console


async def _run(console: Console, slug: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await console.post_json(f"/api/v1/functions/{slug}/run", body)
    assert response.status == 200, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def _history(console: Console, execution_id: str) -> dict[str, Any]:
    for _ in range(200):
        response = await console.client.get(f"/api/v1/executions/{execution_id}")
        if response.status == 200:
            data: dict[str, Any] = await response.json()
            if data["status"] in ("completed", "failed"):
                return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"{execution_id} never reached the history")


async def test_functions_list_filters_and_counts(console: Console) -> None:
    body = await (await console.client.get("/api/v1/functions")).json()
    slugs = [f["slug"] for f in body["functions"]]
    assert "system/echo" in slugs
    assert "hooks/notify" in slugs
    assert body["source"] == "registry"
    assert body["counts"]["execution_type"]["http"] == 1
    http = await (await console.client.get("/api/v1/functions?execution_type=http")).json()
    assert [f["slug"] for f in http["functions"]] == ["hooks/notify"]
    assert http["matched"] == 1
    assert http["total"] == body["total"]
    tagged = await (await console.client.get("/api/v1/functions?tag=notify&q=webhook")).json()
    assert [f["slug"] for f in tagged["functions"]] == ["hooks/notify"]
    none = await (await console.client.get("/api/v1/functions?q=no-such-thing")).json()
    assert none["functions"] == []
    bad = await console.client.get("/api/v1/functions?enabled=maybe")
    assert bad.status == 400
    assert (await bad.json())["error"]["fields"] == {"enabled": "enabled must be true or false"}
    assert (await console.client.get("/api/v1/functions?execution_type=lambda")).status == 400


async def test_function_detail_hides_header_values_and_404s_unknown(console: Console) -> None:
    response = await console.client.get("/api/v1/functions/hooks/notify")
    body = await response.json()
    assert body["function"]["webhook_headers"] == {"Authorization": "•••"}
    assert "s3cr3t-literal-value" not in await response.text()
    page = await console.client.get("/functions/hooks/notify")
    assert "s3cr3t-literal-value" not in await page.text()
    assert body["function"]["effective_retry_policy"]["max_attempts"] >= 1
    assert [v["version"] for v in body["versions"]] == [1]
    missing = await console.client.get("/api/v1/functions/no/such")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"
    page = await console.client.get("/functions/no/such")
    assert page.status == 404
    assert "Traceback" not in await page.text()


async def test_edit_refuses_a_bad_schema_then_saves_a_new_version_with_a_diff(console: Console) -> None:
    path = "/api/v1/functions/hooks/notify"
    refused = await console.put_json(path, {"input_schema": {"type": "nonsense"}})
    assert refused.status == 422
    fields = (await refused.json())["error"]["fields"]
    assert "input_schema" in fields
    assert "valid JSON Schema" in fields["input_schema"]
    unchanged = await (await console.client.get(path)).json()
    assert unchanged["function"]["version"] == 1  # nothing half-saved
    assert (await console.put_json(path, {"timeout_seconds": -1})).status == 422
    assert (await console.put_json(path, {"webhook_url": "ftp://x"})).status == 422
    assert (await console.put_json(path, {"no_such_field": 1})).status == 422
    assert (await console.put_json(path, {"slug": "hooks/other"})).status == 400
    bad_json = await console.client.put(
        path, data=b"{not json", headers={"X-CSRF-Token": console.csrf, "Content-Type": "application/json"}
    )
    assert bad_json.status == 400

    saved = await console.put_json(path, {"description": "Posts to the ops webhook", "timeout_seconds": 12})
    assert saved.status == 200, await saved.text()
    body = await saved.json()
    assert body["action"] == "updated"
    assert body["function"]["version"] == 2
    versions = await (await console.client.get(f"{path}/versions")).json()
    assert [v["version"] for v in versions["versions"]] == [2, 1]
    diff = await (await console.client.get(f"{path}/diff?from=1&to=2")).json()
    assert '-  "description": "Posts to a webhook",' in diff["lines"]
    assert '+  "timeout_seconds": 12,' in diff["lines"]
    assert (await console.client.get(f"{path}/diff?from=1&to=9")).status == 404
    assert (await console.client.get(f"{path}/diff?from=x&to=2")).status == 400
    header_kept = await console.client.get(path)
    assert (await header_kept.json())["function"]["webhook_headers"] == {"Authorization": "•••"}


async def test_builtins_are_read_only(console: Console) -> None:
    response = await console.put_json("/api/v1/functions/system/echo", {"description": "mine"})
    assert response.status == 422
    assert "built-in" in (await response.json())["error"]["fields"]["_form"]


async def test_create_function_validates_and_refuses_duplicates(console: Console) -> None:
    body = {
        "slug": "hooks/created",
        "domain": "http",
        "execution_type": "http",
        "webhook_url": "https://example.com/created",
    }
    created = await console.post_json("/api/v1/functions", body)
    assert created.status == 201, await created.text()
    assert (await created.json())["function"]["slug"] == "hooks/created"
    again = await console.post_json("/api/v1/functions", body)
    assert again.status == 422
    missing_url = await console.post_json(
        "/api/v1/functions", {"slug": "hooks/x", "domain": "http", "execution_type": "http"}
    )
    assert missing_url.status == 422
    assert "webhook_url" in (await missing_url.json())["error"]["fields"]
    assert (await console.post_json("/api/v1/functions", [1, 2])).status == 400


async def test_run_echo_and_a_failure_then_history_and_rerun(console: Console) -> None:
    ok = await _run(console, "system/echo", {"input": {"text": "<script>alert(1)</script>"}})
    assert ok["status"] == "completed"
    assert ok["output"] == {"text": "<script>alert(1)</script>"}
    assert ok["attempt"] == 1
    assert ok["duration_ms"] is not None
    assert ok["link"] == f"/executions/{ok['execution_id']}"
    failed = await _run(console, "system/fail", {"input": {"message": "<b>nope</b>"}})
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "function_failed"

    row = await _history(console, ok["execution_id"])
    assert row["input"] == {"text": "<script>alert(1)</script>"}
    page = await console.client.get(f"/executions/{ok['execution_id']}")
    html = await page.text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html

    listing = await (await console.client.get("/api/v1/executions?function=system/fail")).json()
    assert [e["id"] for e in listing["executions"]] == [failed["execution_id"]]
    assert listing["executions"][0]["error_code"] == "function_failed"
    by_code = await (await console.client.get("/api/v1/executions?error_code=function_failed")).json()
    assert [e["id"] for e in by_code["executions"]] == [failed["execution_id"]]

    rerun = await console.post_json(f"/api/v1/executions/{ok['execution_id']}/rerun", {})
    assert rerun.status == 201
    again = await rerun.json()
    assert again["execution_id"] != ok["execution_id"]
    assert again["output"] == ok["output"]
    assert again["rerun_of"] == ok["execution_id"]
    stats = await (await console.client.get("/api/v1/functions/system/echo/stats")).json()
    assert stats["finished"] >= 1
    assert stats["success_rate"] == 1.0
    assert stats["p50_ms"] is not None


async def test_run_reports_validation_field_paths_and_bad_bodies(console: Console) -> None:
    result = await _run(console, "system/sleep", {"input": {"seconds": "long"}})
    assert result["status"] == "failed"
    assert result["error"]["code"] == "invalid_input"
    assert [f["path"] for f in result["field_errors"]] == ["/seconds"]
    bad = await console.post_json("/api/v1/functions/system/echo/run", {"input": [1]})
    assert bad.status == 400
    assert (await console.post_json("/api/v1/functions/system/echo/run", {"timeout": 0})).status == 400
    assert (await console.post_json("/api/v1/functions/system/echo/run", {"context": "x"})).status == 400
    assert (await console.post_json("/api/v1/functions/no/such/run", {"input": {}})).status == 404


async def test_disabled_function_fails_with_its_code(console: Console) -> None:
    state = await console.post_json("/api/v1/functions/system/echo/state", {"enabled": False})
    assert state.status == 200
    assert (await state.json())["is_enabled"] is False
    result: dict[str, Any] = {}
    for _ in range(50):  # the worker's cache drops the row on NOTIFY
        result = await _run(console, "system/echo", {"input": {"a": 1}})
        if result["status"] == "failed":
            break
        await asyncio.sleep(0.1)
    assert result["error"]["code"] == "function_disabled"
    assert (await console.post_json("/api/v1/functions/system/echo/state", {"enabled": "no"})).status == 400
    assert (await console.post_json("/api/v1/functions/system/echo/state", {})).status == 400
    assert (await console.post_json("/api/v1/functions/no/such/state", {"enabled": True})).status == 404


async def test_executions_keyset_pages_and_bad_filters(console: Console, pool: Any) -> None:
    await pool.execute(
        """INSERT INTO function_executions (id, function_slug, status, created_at)
           SELECT 'e' || lpad(i::text, 3, '0'), 'system/echo', 'completed', now() - i * interval '1 s'
           FROM generate_series(1, 25) AS i"""
    )
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        query = "limit=10" + (f"&cursor={cursor}" if cursor else "")
        body = await (await console.client.get(f"/api/v1/executions?{query}")).json()
        seen += [e["id"] for e in body["executions"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"e{i:03d}" for i in range(1, 26)]
    for bad in (
        "status=done",
        "limit=0",
        "limit=501",
        "cursor=garbage",
        "since=yesterday",
        "since=2024-02-01&until=2024-01-01",
    ):
        response = await console.client.get(f"/api/v1/executions?{bad}")
        assert response.status == 400, bad
    missing = await console.client.get("/api/v1/executions/nope")
    assert missing.status == 404
    assert (await console.post_json("/api/v1/executions/nope/rerun", {})).status == 404
    page = await console.client.get("/executions?limit=10")
    assert "Older" in await page.text()


async def test_fleet_and_dead_letters(console: Console, redis: Any) -> None:
    fleet = await (await console.client.get("/api/v1/fleet")).json()
    assert next(d["name"] for d in fleet["domains"]) == "ai"
    dlq = console.settings.dlq_for(console.settings.topic_for("ai"))
    entry = await redis.xadd(
        dlq,
        {
            "data": b'{"specversion":"1.0","id":"x1","type":"fleet.execution.requested","source":"t",'
            b'"data":{"function":"system/echo","input":{}}}',
            "metadata": b'{"fleet.error":"<img src=x onerror=alert(1)>","fleet.deliveries":"3"}',
        },
    )
    entry_id = entry.decode()
    listing = await (await console.client.get("/api/v1/dead-letters?domain=ai")).json()
    assert listing["domains"][0]["count"] == 1
    assert listing["domains"][0]["entries"][0]["error"] == "<img src=x onerror=alert(1)>"
    shown = await (await console.client.get(f"/api/v1/dead-letters/ai/{entry_id}")).json()
    assert shown["deliveries"] == 3
    page = await (await console.client.get(f"/dead-letters/ai/{entry_id}")).text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<img src=x" not in page
    assert (await console.client.get("/api/v1/dead-letters/ai/1-0")).status == 404
    assert (await console.client.get("/api/v1/dead-letters/nodomain/1-0")).status == 404
    assert (await console.post_json("/api/v1/dead-letters/ai/redrive", {"ids": ["bad"]})).status == 400
    assert (await console.post_json("/api/v1/dead-letters/ai/redrive", {})).status == 400
    moved = await (await console.post_json("/api/v1/dead-letters/ai/redrive", {"ids": [entry_id]})).json()
    assert [m["id"] for m in moved["moved"]] == [entry_id]
    assert await redis.xlen(dlq) == 0


async def test_every_page_renders(console: Console) -> None:
    for path in (
        "/functions",
        "/functions/system/echo",
        "/functions/hooks/notify",
        "/executions",
        "/fleet",
        "/dead-letters",
        "/new?type=http",
        "/new?type=oci",
        "/login",
    ):
        response = await console.client.get(path)
        assert response.status == 200, path
        assert response.headers["Content-Security-Policy"].endswith("frame-ancestors 'none'")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await console.client.get("/new?type=lambda")).status == 400


async def test_functions_page_with_a_thousand_functions_stays_under_300_kb(
    console: Console, pool: Any
) -> None:
    await pool.execute(
        """INSERT INTO functions (name, slug, description, plugin_id, domain, execution_type,
               webhook_url, tags)
           SELECT 'Function ' || i, 'bench/fn-' || lpad(i::text, 5, '0'),
                  'A benchmark function that calls a webhook and has a long enough description ' || i,
                  'bench', 'http', 'http', 'https://example.com/' || i, ARRAY['bench', 'group-' || (i % 10)]
           FROM generate_series(1, 1000) AS i"""
    )
    page = await console.client.get("/functions")
    body = await page.read()
    assert page.status == 200
    assert body.count(b'href="/functions/bench/fn-') == 1000
    assert len(body) < 300 * 1024
