"""The orchestrator example through the raw HTTP API with httpx, for comparison (bench/sdk.py times both)."""

import os
from concurrent.futures import ThreadPoolExecutor

import httpx

http = httpx.Client(
    base_url=os.environ["DOCKYARD_URL"],
    headers={"Authorization": f"Bearer {os.environ['DOCKYARD_TOKEN']}"},
    timeout=120,
)


def check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.text}")
    return response


def run_task(n: int) -> str:
    body = {"template": "ai-agent-sandbox", "ttl": "1h", "parameters": {"task": f"task {n}"}}
    ws = check(http.post("/api/v2/workspaces", json=body)).json()
    try:
        url = f"/api/v2/workspaces/{ws['id']}"
        ready = check(http.get(url, params={"wait": "ready", "timeout": 120})).json()
        if ready["status"] != "running":
            raise RuntimeError(f"workspace {ws['name']} is {ready['status']}: {ready['status_reason']}")
        script = f"echo checking {n}\nseq 3\necho {n * n} > result.txt\n"
        check(http.put(f"{url}/files", params={"path": "project/check.sh"}, content=script.encode()))
        # Streaming output needs the exec WebSocket; the plain call returns it all at the end.
        out = check(http.post(f"{url}/exec", json={"command": "sh check.sh", "cwd": "project"})).json()
        for line in out["stdout"].splitlines():
            print(f"[{n}] {line}")
        result = check(http.get(f"{url}/files", params={"path": "project/result.txt"})).text.strip()
        slow = check(http.post(f"{url}/exec", json={"command": "sleep 30", "timeout": 1})).json()
        assert slow["timed_out"], "the command outlived its timeout"
        return result
    finally:
        check(http.delete(f"/api/v2/workspaces/{ws['id']}"))
        http.get(f"/api/v2/workspaces/{ws['id']}", params={"wait": "done", "timeout": 60})


with ThreadPoolExecutor(5) as pool:
    results = list(pool.map(run_task, range(1, 6)))
print("results:", results)
