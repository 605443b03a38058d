"""End to end under a campaign's load: web chat customers asking FAQ questions of `siyu serve`.

`python -m bench e2e` starts `siyu serve` on a scratch SQLite database and runs 32 clients × 30
questions over the web chat WebSocket (each client sends a question and waits for its answer), then
the same client code against a bare aiohttp WebSocket echo server, in the same run: the ratio of the
two rates is the figure that travels between machines. With SIYU_BENCH_DATABASE_URL (a scratch
PostgreSQL database: its public schema is dropped) it also runs one and two serve processes on it,
clients split between them. Prints one JSON object; `server_cpu_ms_per_reply` (the serve processes' CPU
time over the run, per answer, from /proc) is the figure that moves least when the machine is busy.

Environment: BENCH_CLIENTS (32), BENCH_QUESTIONS (30), BENCH_SIYU_ROOT (the siyu checkout to serve:
measure an older version from an extracted copy with the same client code).
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
SIYU_ROOT = Path(os.environ.get("BENCH_SIYU_ROOT", ROOT))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "32"))
QUESTIONS = int(os.environ.get("BENCH_QUESTIONS", "30"))
# exact FAQ wordings from the shipped scripts/faq.yaml: the fuzzy tier answers them
ASKED = ("包邮吗", "什么时候发货", "可以退货吗", "怎么查物流", "退款多久到账", "可以换货吗")
ANSWER_TIMEOUT = 30.0
GREETING_TIMEOUT = 60.0


@dataclass
class Run:
    """One load run: every answer's latency, and what went wrong."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu_ms_per_reply: float | None = None  # the serve processes' CPU over the run, per answer

    def summary(self) -> dict[str, object]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000, 2) if ordered else None

        return {"replies": len(ordered), "seconds": round(self.seconds, 2),
                "replies_per_s": round(len(ordered) / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                "mean_ms": round(statistics.fmean(ordered) * 1000, 2) if ordered else None,
                "errors": len(self.errors), "error_kinds": sorted(set(self.errors))[:5],
                **({"server_cpu_ms_per_reply": self.server_cpu_ms_per_reply}
                   if self.server_cpu_ms_per_reply is not None else {})}


async def _client(http: aiohttp.ClientSession, url: str, n: int, run: Run, ready: asyncio.Barrier) -> None:
    """Join as a customer, take the greeting, then ask one question at a time, waiting for each answer."""
    try:
        async with http.ws_connect(url, heartbeat=None) as ws:
            await ws.send_json({"type": "join", "role": "customer", "name": f"压测{n:03d}"})
            async with asyncio.timeout(GREETING_TIMEOUT):
                while True:  # the greeting: a journey's first step, sent when the customer arrives
                    frame = await ws.receive_json()
                    if frame.get("type") == "message" and frame.get("from") == "bot":
                        break
            await ready.wait()  # everyone asks at the same moment
            for i in range(QUESTIONS):
                began = time.perf_counter()
                await ws.send_json({"type": "say", "id": f"q{i}", "text": ASKED[(n + i) % len(ASKED)]})
                async with asyncio.timeout(ANSWER_TIMEOUT):
                    while True:
                        frame = await ws.receive_json()
                        if frame.get("type") == "error":
                            run.errors.append(f"error frame: {frame.get('text')}")
                            break
                        if frame.get("type") == "message" and frame.get("from") == "bot":
                            run.latencies.append(time.perf_counter() - began)
                            break
    except (TimeoutError, asyncio.BrokenBarrierError, aiohttp.ClientError, ConnectionError, TypeError,
            ValueError) as exc:
        run.errors.append(type(exc).__name__)
        if not ready.broken:
            await ready.abort()


async def load(urls: list[str]) -> Run:
    """CLIENTS clients, split over `urls`, all asking at once."""
    run = Run()
    ready = asyncio.Barrier(CLIENTS + 1)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = [asyncio.create_task(_client(http, urls[n % len(urls)], n, run, ready)) for n in range(CLIENTS)]
        try:
            async with asyncio.timeout(GREETING_TIMEOUT + 5):
                await ready.wait()
        except (TimeoutError, asyncio.BrokenBarrierError):
            run.errors.append("not every client was greeted")
        began = time.perf_counter()
        await asyncio.gather(*tasks)
        run.seconds = time.perf_counter() - began
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_http(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the server did not answer within {seconds:.0f}s:\n{log.read_text()[-3000:]}")


def write_config(directory: Path, database_url: str) -> Path:
    """The shipped config.yaml on a scratch database; flood control off, since load is the point here."""
    data = yaml.safe_load((SIYU_ROOT / "config.yaml").read_text(encoding="utf-8"))
    data["database_url"] = database_url
    data.setdefault("inbound", {})["flood"] = {"messages": 100000, "window": "1m"}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


class Served:
    """`siyu serve` processes on one database."""

    def __init__(self, config: Path, processes: int, directory: Path) -> None:
        self.config = config
        self.ports = [_free_port() for _ in range(processes)]
        self.directory = directory
        self.procs: list[subprocess.Popen[bytes]] = []

    async def __aenter__(self) -> list[str]:
        env = {key: value for key, value in os.environ.items() if key != "SIYU_DATABASE_URL"}
        env["PYTHONPATH"] = str(SIYU_ROOT)
        subprocess.run([sys.executable, "-m", "bot.cli", "--config", str(self.config), "--scripts",
                        str(SIYU_ROOT / "scripts"), "db", "upgrade"], cwd=SIYU_ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        for i, port in enumerate(self.ports):
            log = self.directory / f"serve-{port}.log"
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "--config", str(self.config), "--scripts", str(SIYU_ROOT / "scripts"),
                 "serve", "--port", str(port)], cwd=SIYU_ROOT, env=env, stdout=log.open("wb"),
                stderr=subprocess.STDOUT))
            await _wait_http(port, self.procs[-1], log)
        return [f"http://127.0.0.1:{port}/ws" for port in self.ports]

    async def __aexit__(self, *_exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def cpu_seconds(self) -> float | None:
        """CPU time the serve processes have used so far (Linux /proc; None elsewhere)."""
        try:
            total = 0
            for proc in self.procs:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
            return total / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def locked_errors(self) -> int:
        """Lines in the servers' logs that say the database was locked."""
        return sum(log.read_text(errors="replace").count("database is locked")
                   for log in self.directory.glob("serve-*.log"))


async def echo_server(port: int) -> None:
    """The baseline: a bare aiohttp WebSocket server answering each frame at once."""
    from aiohttp import WSMsgType, web

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            if frame.get("type") == "join":
                await ws.send_json({"type": "joined", "history": []})
            await ws.send_json({"type": "message", "from": "bot", "text": frame.get("text", "")})
        return ws

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def run_echo(directory: Path) -> Run:
    port = _free_port()
    log = directory / "echo.log"
    proc = subprocess.Popen([sys.executable, "-c", f"import asyncio, bench.e2e as e; asyncio.run(e.echo_server({port}))"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    try:
        await _wait_http(port, proc, log)
        return await load([f"http://127.0.0.1:{port}/ws"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def run_siyu(directory: Path, database_url: str, processes: int) -> tuple[Run, int]:
    config = write_config(directory, database_url)
    served = Served(config, processes, directory)
    async with served as urls:
        before = served.cpu_seconds()
        run = await load(urls)  # (includes greeting the clients: a few transactions each)
        after = served.cpu_seconds()
    if before is not None and after is not None and run.latencies:
        run.server_cpu_ms_per_reply = round((after - before) * 1000 / len(run.latencies), 2)
    return run, served.locked_errors()


async def _reset_postgres(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


async def main() -> None:
    result: dict[str, object] = {"clients": CLIENTS, "questions_each": QUESTIONS, "siyu_root": str(SIYU_ROOT),
                                 "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        echo = await run_echo(directory)
        result["echo"] = echo.summary()
        sqlite_dir = directory / "sqlite"
        sqlite_dir.mkdir()
        siyu, locked = await run_siyu(sqlite_dir, f"sqlite+aiosqlite:///{sqlite_dir}/bench.db", 1)
        result["siyu_sqlite"] = {**siyu.summary(), "database_is_locked_lines": locked}
        echo_rate = len(echo.latencies) / echo.seconds if echo.seconds else 0.0
        siyu_rate = len(siyu.latencies) / siyu.seconds if siyu.seconds else 0.0
        result["ratio_sqlite_to_echo"] = round(siyu_rate / echo_rate, 4) if echo_rate else None
        pg_url = os.environ.get("SIYU_BENCH_DATABASE_URL")
        if pg_url:
            rates = {}
            for processes in (1, 2):
                await _reset_postgres(pg_url)
                pg_dir = directory / f"pg{processes}"
                pg_dir.mkdir()
                run, locked = await run_siyu(pg_dir, pg_url, processes)
                result[f"siyu_postgresql_{processes}_process"] = run.summary()
                rates[processes] = len(run.latencies) / run.seconds if run.seconds else 0.0
            result["ratio_pg_2_to_1_process"] = round(rates[2] / rates[1], 3) if rates[1] else None
            result["ratio_pg_1_process_to_echo"] = round(rates[1] / echo_rate, 4) if echo_rate else None
    print(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
