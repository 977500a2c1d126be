"""Five sandboxes in parallel: create, write a file, stream a command's output, read a result, a timeout, delete.

DOCKYARD_URL=http://127.0.0.1:3000 DOCKYARD_TOKEN=dy_... python docs/examples/orchestrator.py
"""

from concurrent.futures import ThreadPoolExecutor

from dockyard_sdk import Client

client = Client()  # DOCKYARD_URL and DOCKYARD_TOKEN, else the CLI's `dockyard login`


def run_task(n: int) -> str:
    with client.create("ai-agent-sandbox", ttl="1h", parameters={"task": f"task {n}"}) as ws:
        ws.files.write("project/check.sh", f"echo checking {n}\nseq 3\necho {n * n} > result.txt\n")
        ws.exec("sh check.sh", cwd="project", on_stdout=lambda line: print(f"[{n}] {line}"))
        result = ws.files.read_text("project/result.txt").strip()
        slow = ws.exec("sleep 30", timeout=1)
        assert slow.timed_out, "the command outlived its timeout"
        return result
    # leaving the `with` block deleted the workspace


with ThreadPoolExecutor(5) as pool:
    results = list(pool.map(run_task, range(1, 6)))
print("results:", results)
