"""The product brief's requests as written: `curl -d '{…}'` with no JSON content type, `github.com/org/repo`,
`ttl_hours` as a string. The curl tests run the real `curl` binary against a server listening on a real port."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from dockyard.api.app import create_app
from dockyard.config import Settings
from dockyard_sdk import Client
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime
from tests.harness import Harness, make_harness, manifest_yaml, tar_gz
from tests.live import free_port

README = Path(__file__).parents[2] / "README.md"

# The brief's request, exactly as DESIGN.md ("Contracts") prints it.
BRIEF_CURL = """curl -X POST $DOCKYARD_URL/api/v2/workspaces \\
-H "Authorization: Bearer $AGENT_TOKEN" \\
-d '{
"template_id": "ai-agent-sandbox",
"name": "agent-task-4821",
"rich_parameters": {
"repo": "github.com/org/backend",
"branch": "feature/auth-refactor",
"ttl_hours": "4"
}
}'"""

BRIEF_BODY = json.loads(BRIEF_CURL.split("-d '", 1)[1].rstrip("'"))


@pytest.fixture
def bh(tmp_path: Path, database_url: str) -> Iterator[Harness]:
    harness = make_harness(tmp_path, database_url, builtin_templates=True)
    yield harness
    harness.close()


@pytest.fixture
def served(bh: Harness) -> Iterator[str]:
    """The harness's app on a real loopback port (its lifespan already runs in the harness)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(bh.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _curl(command: str, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    # -sS and -w only report what came back; the request is the command's own.
    done = subprocess.run(
        ["bash", "-c", command + " -sS -w '\\n%{http_code}'"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(body)


def _token(h: Harness) -> str:
    assert h.admin.token is not None
    return str(h.admin.token)


def test_the_brief_s_curl_creates_the_workspace(bh: Harness, served: str) -> None:
    status, body = _curl(BRIEF_CURL, {"DOCKYARD_URL": served, "AGENT_TOKEN": _token(bh)})

    assert status == 201, body
    ws = bh.admin.get_workspace(body["id"], wait="done", timeout=30)
    assert (ws.name, ws.template_name, ws.status) == (
        "agent-task-4821",
        "ai-agent-sandbox",
        m.WorkspaceStatus.RUNNING,
    )
    assert ws.parameters == {
        "repo": "https://github.com/org/backend",
        "branch": "feature/auth-refactor",
        "task": "",
        "agent": "none",
        "ttl_hours": 4,
    }
    assert ws.deadline is not None
    assert abs((ws.deadline - ws.created_at).total_seconds() - 4 * 3600) < 120


def test_the_readme_s_curl_examples_work_as_printed(bh: Harness, served: str) -> None:
    text = README.read_text()
    create = re.search(
        r"^curl [^\n]*-d '\{.*?\}' \\\n\s+http://127\.0\.0\.1:3000/api/v2/workspaces$", text, re.M | re.S
    )
    assert create is not None, "the README's create example moved"
    wait = re.search(r'^curl [^\n]*"http://127\.0\.0\.1:3000/api/v2/workspaces/\$ID\?wait=done"$', text, re.M)
    assert wait is not None, "the README's wait example moved"
    env = {"TOKEN": _token(bh)}

    status, created = _curl(create.group(0).replace("http://127.0.0.1:3000", served), env)
    assert status == 201, created
    status, done = _curl(wait.group(0).replace("http://127.0.0.1:3000", served), {**env, "ID": created["id"]})

    assert status == 200, done
    assert (done["status"], done["template_name"], done["parameters"]["agent"]) == (
        "running",
        "ai-agent-sandbox",
        "claude-code",
    )
    assert done["parameters"]["task"] == "fix the flaky test"


def _post(h: Harness, body: str, headers: dict[str, str]) -> Any:
    return h.http().post("/api/v2/workspaces", content=body, headers=headers)


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
def test_a_json_body_with_a_bearer_token_needs_no_json_content_type(
    bh: Harness, content_type: str | None
) -> None:
    headers = {"Authorization": f"Bearer {_token(bh)}"}
    if content_type:
        headers["Content-Type"] = content_type
    second = {"template": "ai-agent-sandbox", "ttl": "4h", "parameters": {"repo": "/srv/app", "task": "t"}}

    first = _post(bh, json.dumps(BRIEF_BODY), headers)
    other = _post(bh, json.dumps(second), headers)

    assert (first.status_code, other.status_code) == (201, 201), (first.text, other.text)
    assert first.json()["parameters"]["repo"] == "https://github.com/org/backend"
    assert other.json()["parameters"]["repo"] == "/srv/app"


def test_field_errors_still_name_the_field_without_a_content_type(bh: Harness) -> None:
    body = {
        **BRIEF_BODY,
        "rich_parameters": {**BRIEF_BODY["rich_parameters"], "ttl_hours": "40", "repo": "-x"},
    }
    response = _post(bh, json.dumps(body), {"Authorization": f"Bearer {_token(bh)}"})

    assert response.status_code == 422
    assert response.json()["validations"] == [
        {"field": "repo", "detail": "'-x' starts with '-' and would be read as an option, not a repository"},
        {"field": "ttl_hours", "detail": "40 is above the maximum 24"},
    ]
    assert bh.admin.list_workspaces().workspaces == []


def test_a_cookie_session_still_needs_a_json_content_type(bh: Harness) -> None:
    # A page on another origin can post a form with the user's cookie; it cannot set a JSON content type
    # without CORS, nor an Authorization header, so relabelling is for bearer requests only. The cross-site
    # check refuses such a page first; a same-origin page with the CSRF token still needs the JSON type.
    login = bh.http().post("/api/v2/users/login", json={"username": "admin", "password": _admin_password(bh)})
    assert login.status_code == 200, login.text
    client = bh.http()
    client.cookies.set("dockyard_session", login.cookies["dockyard_session"])
    same_origin = {"Origin": "http://testserver", "X-CSRF-Token": login.cookies["dockyard_csrf"]}

    foreign = client.post(
        "/api/v2/workspaces",
        content=json.dumps(BRIEF_BODY),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.test"},
    )
    assert foreign.status_code == 403
    refused = client.post(
        "/api/v2/workspaces",
        content=json.dumps(BRIEF_BODY),
        headers={"Content-Type": "application/x-www-form-urlencoded", **same_origin},
    )
    assert refused.status_code == 422
    assert refused.json()["validations"][0]["field"] == "body"
    assert bh.admin.list_workspaces().workspaces == []
    accepted = client.post("/api/v2/workspaces", json=BRIEF_BODY, headers=same_origin)
    assert accepted.status_code == 201, accepted.text


def _admin_password(h: Harness) -> str:
    return (h.data_dir / "admin-password").read_text().strip()


def test_a_real_form_body_is_left_alone(bh: Harness) -> None:
    response = _post(
        bh,
        "template=ai-agent-sandbox&name=x",
        {"Authorization": f"Bearer {_token(bh)}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 422
    assert response.json()["validations"][0]["field"] == "body"
    assert bh.admin.list_workspaces().workspaces == []


@pytest.fixture
def agent_served(tmp_path: Path, database_url: str) -> Iterator[tuple[Client, str]]:
    """A whole server on a real port, lifespan included (so the agent hub lives on uvicorn's loop), whose
    workspaces run the real agent as local processes."""
    data_dir = Path(tempfile.gettempdir()) / f"dy-{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]}"
    (tmp_path / "data").mkdir()
    data_dir.symlink_to(tmp_path / "data")
    settings = Settings(
        data_dir=data_dir, database_url=database_url, access_log=False, ssh_listen="", warm_networks={}
    )
    runtime = FakeRuntime(agents=True)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, runtime=runtime), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    with Client(url, (data_dir / "admin-token").read_text().strip()) as client:
        yield client, url
    server.should_exit = True
    thread.join(10)
    runtime.close()
    data_dir.unlink()


def test_the_readme_s_exec_and_file_examples_work_as_printed(
    agent_served: tuple[Client, str], tmp_path: Path
) -> None:
    # The README's create example names a repository on a host this machine must not reach; the commands
    # below run in a workspace of a local template instead, with the README's lines as printed.
    client, url = agent_served
    client.create_template(tar_gz({"dockyard.yaml": manifest_yaml(startup_script="true")}))
    created = client.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="readme"))
    ws = client.get_workspace(created.id, wait="ready", timeout=60)
    assert ws.agent is not None
    assert ws.agent.lifecycle == m.AgentLifecycle.READY
    client.exec(ws.id, m.ExecRequest(command="mkdir -p app && echo '<testsuite/>' > app/report.xml"))
    text = README.read_text()
    exec_line = re.search(r"^curl [^\n]*-d '\{\"command\".*?/exec", text, re.M | re.S)
    upload = re.search(r"^curl [^\n]*-T patch\.diff [^\n]*$", text, re.M)
    download = re.search(r"^curl [^\n]*files\?path=app/report\.xml\"$", text, re.M)
    assert exec_line is not None, "the README's exec example moved"
    assert upload is not None, "the README's upload example moved"
    assert download is not None, "the README's download example moved"
    (tmp_path / "patch.diff").write_text("--- a\n+++ b\n")
    env = {"TOKEN": str(client.token), "ID": ws.id}

    def run(line: str) -> tuple[int, str]:
        done = subprocess.run(
            ["bash", "-c", line.replace("http://127.0.0.1:3000", url) + " -sS -w '\\n%{http_code}'"],
            env={"PATH": os.environ["PATH"], **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        body, _, status = done.stdout.rpartition("\n")
        return int(status), body

    status, body = run(exec_line.group(0))
    assert status == 200, body
    result = m.ExecResult.model_validate_json(body)
    assert result.exit_code is not None
    assert result.timed_out is False
    status, body = run(upload.group(0))
    assert status in (200, 201), body
    assert client.read_file(ws.id, "app/patch.diff") == b"--- a\n+++ b\n"
    status, body = run(download.group(0))
    assert (status, body) == (200, "<testsuite/>\n")
