"""A new function from a template in the console: what `fleet new` does (the python template
scaffolded under $FLEET_HOME/functions), registered from its function.local.yaml, and run at once
by an ``oci`` worker on the local backend through the console's test console."""

from __future__ import annotations

from typing import Any

from shared.assemble import create_worker
from tests.conftest import running
from tests.console.conftest import Console


async def test_a_function_from_the_python_template_runs_on_the_local_backend(console: Console) -> None:
    made = await console.post_json(
        "/api/v1/functions/from-template", {"template": "python", "name": "acme/count-words"}
    )
    assert made.status == 201, await made.text()
    body: dict[str, Any] = await made.json()
    assert body["action"] == "created"
    function = body["function"]
    assert (function["slug"], function["execution_type"], function["domain"]) == (
        "acme/count-words",
        "oci",
        "oci",
    )
    directory = console.settings.home / "functions" / "count-words"
    assert body["directory"] == str(directory)
    assert {"main.py", "Dockerfile", "function.yaml", "function.local.yaml"} <= set(body["files"])
    assert function["working_dir"] == str(directory)
    assert body["next"][0].startswith(f"fleet build {directory}")

    settings = console.settings.model_copy(update={"oci_backend": "local"})
    async with running(create_worker("oci", settings)):
        ran = await console.post_json(
            "/api/v1/functions/acme/count-words/run", {"input": {"text": "to be or not to be"}, "timeout": 60}
        )
        assert ran.status == 200, await ran.text()
        result: dict[str, Any] = await ran.json()
    assert result["status"] == "completed", result
    assert result["output"]["words"] == 6
    assert {"word": "to", "count": 2} in result["output"]["top"]


async def test_a_template_request_is_checked_and_never_overwrites(console: Console) -> None:
    first = {"template": "python", "name": "twice"}
    assert (await console.post_json("/api/v1/functions/from-template", first)).status == 201
    again = await console.post_json("/api/v1/functions/from-template", first)
    assert again.status == 400
    assert "exists" in (await again.json())["error"]["message"]
    for bad in (
        {"template": "cobol", "name": "x"},
        {"template": "python", "name": "../etc"},
        {"template": "go"},
    ):
        response = await console.post_json("/api/v1/functions/from-template", bad)
        assert response.status == 400, bad
    assert not (console.settings.home / "etc").exists()


async def test_the_new_function_page_creates_from_a_template(console: Console) -> None:
    await console.prime()  # the CSRF cookie and token
    page = await console.client.get("/new?type=oci")
    assert page.status == 200
    html = await page.text()
    assert 'action="/new/from-template"' in html
    form = {"template": "python", "name": "from-page", "_csrf": console.csrf}
    made = await console.client.post("/new/from-template", data=form, allow_redirects=False)
    assert made.status == 303, await made.text()
    assert made.headers["Location"] == "/functions/custom/from-page?saved=1"
    refused = await console.client.post("/new/from-template", data=form, allow_redirects=False)
    assert refused.status == 422
    assert "exists" in await refused.text()
