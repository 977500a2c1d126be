"""The same five sandboxes with asyncio: `AsyncClient`, async context managers, an async output callback."""

import asyncio

from dockyard_sdk import AsyncClient


async def run_task(client: AsyncClient, n: int) -> str:
    async def show(line: str) -> None:
        print(f"[{n}] {line}")

    async with client.create("ai-agent-sandbox", ttl="1h", parameters={"task": f"task {n}"}) as ws:
        await ws.files.write("project/check.sh", f"echo checking {n}\nseq 3\necho {n * n} > result.txt\n")
        await ws.exec("sh check.sh", cwd="project", on_stdout=show)
        result = (await ws.files.read_text("project/result.txt")).strip()
        slow = await ws.exec("sleep 30", timeout=1)
        assert slow.timed_out, "the command outlived its timeout"
        return result


async def main() -> None:
    async with AsyncClient() as client:
        results = await asyncio.gather(*(run_task(client, n) for n in range(1, 6)))
    print("results:", results)


asyncio.run(main())
