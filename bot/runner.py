"""Start and supervise Linli's processes: Rasa server, action server and the hub."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Ports:
    hub: int = 8000
    rasa: int = 5005
    actions: int = 5055


@dataclass
class Stack:
    """The three processes of one Linli installation, started from one environment."""

    model: Path
    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env["PYTHONPATH"] = str(ROOT)
        env["ACTION_ENDPOINT_URL"] = f"http://{self.host}:{self.ports.actions}/webhook"
        env["RASA_URL"] = f"http://{self.host}:{self.ports.rasa}"
        env["LINLI_HOST"] = self.host
        env["LINLI_PORT"] = str(self.ports.hub)
        env["ACTIONS_PORT"] = str(self.ports.actions)
        env["SANIC_HOST"] = self.host  # the action server binds where the others do
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # Each console sign-in hashes with scrypt (16 MB); glibc keeps such blocks in its
        # heap for good unless they are mmapped: 50 sign-ins cost the hub ~120 MB without it.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "1048576")
        env.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
        return env

    def commands(self) -> dict[str, list[str]]:
        # Rasa only ever sees the REST channel; provider credentials stay with the hub.
        credentials = ROOT / "bot" / "rasa_credentials.yml"
        return {
            "actions": [sys.executable, "-m", "rasa_sdk", "--actions", "actions",
                        "--port", str(self.ports.actions)],
            "rasa": [sys.executable, "-m", "bot.rasa_server", "run", "--enable-api",
                     "--model", str(self.model),
                     "--endpoints", "endpoints.yml", "--credentials", str(credentials),
                     "--interface", self.host, "--port", str(self.ports.rasa)],
            "hub": [sys.executable, "-m", "bot", "serve", "--host", self.host,
                    "--port", str(self.ports.hub)],
        }

    def health_urls(self) -> dict[str, str]:
        return {
            "actions": f"http://{self.host}:{self.ports.actions}/health",
            "rasa": f"http://{self.host}:{self.ports.rasa}/status",
            "hub": f"http://{self.host}:{self.ports.hub}/health",
        }

    def start(self) -> None:
        """Start every process (without waiting for them to be ready)."""
        env = self.environment()
        for name, command in self.commands().items():
            output = None
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                output = open(self.log_dir / f"{name}.log", "ab")
            self.processes[name] = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT if output else None
            )

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Wait until every process answers its health URL; raise if one dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        pending = dict(self.health_urls())
        while pending:
            for name in list(pending):
                process = self.processes[name]
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {process.returncode} while starting")
                try:
                    with urllib.request.urlopen(pending[name], timeout=2) as response:
                        if response.status == 200:
                            del pending[name]
                except (urllib.error.URLError, OSError):
                    pass
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout_s:.0f} s: {', '.join(pending)}")
            if pending:
                time.sleep(0.5)

    def warm_up(self) -> None:
        """Send Rasa a short conversation so the first resident does not pay for lazy loading."""
        url = f"http://{self.host}:{self.ports.rasa}/webhooks/rest/webhook"
        for text in ("你好", "电梯坏了", "再见"):
            body = json.dumps({"sender": "linli-warm-up", "message": text}).encode()
            request = urllib.request.Request(url, data=body,
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30):
                    pass
            except (urllib.error.URLError, OSError):
                return

    def stop(self) -> None:
        """Stop every process, politely first."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items()}


def run_all() -> int:
    """Prepare the database and model, start everything, print where to click, supervise."""
    from bot.migrate import upgrade
    from bot.sandbox import ensure_sandbox_credentials
    from bot.seed import seed_demo
    from bot.settings import Settings
    from bot.training import ensure_model

    settings = Settings.from_env()
    # No real WeChat/Twilio account configured: the demo runs both channels against the
    # hub's own loopback stand-ins, so `python -m bot simulate` works out of the box.
    sandbox_env = ensure_sandbox_credentials(ROOT / "var")
    if sandbox_env:
        settings = Settings.from_env({**os.environ, **sandbox_env})
    upgrade(settings.database_url.reveal())
    print(seed_demo())
    model, seconds = ensure_model()
    if seconds is not None:
        print(f"trained {model.name} in {seconds:.0f} s")
    stack = Stack(
        model=model,
        env=sandbox_env,
        host=settings.host,
        ports=Ports(hub=settings.port, actions=settings.actions_port,
                    rasa=urlsplit(settings.rasa_url).port or 5005),
    )
    started = time.monotonic()
    stack.start()
    try:
        stack.wait_ready()
        stack.warm_up()
        base = f"http://{settings.host}:{settings.port}"
        print(
            f"\n邻里 Linli is ready in {time.monotonic() - started:.0f} s\n"
            f"  web chat      {base}/\n"
            f"  console       {base}/console  (agents, staff, supervisors)\n"
            f"  work orders   {base}/api/tickets/<number>\n"
            f"  terminal chat python -m bot chat --channel sms --sender 13800000000\n"
            + "".join(f"  {line}\n" for line in settings.channel_report())
            + "  try a channel python -m bot simulate sms|wechat|voice"
            + (" (sandbox: no real accounts)\n" if sandbox_env else "\n")
            + f"  Rasa server   {settings.rasa_url}  ·  action server http://{settings.host}:{settings.actions_port}\n"
            f"  database      {settings.database_url_redacted}\n"
            f"Ctrl-C stops everything.",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(process.poll() is None for process in stack.processes.values()):
            time.sleep(1)
        dead = [name for name, p in stack.processes.items() if p.poll() is not None]
        print(f"stopped because {', '.join(dead)} exited", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


def free_port() -> int:
    """Return a loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SandboxStack:
    """A running stack for benchmarks: its address, database and processes."""

    base_url: str
    database_url: str
    stack: Stack
    env: dict[str, str]


@contextmanager
def sandbox_stack(work: Path, model: Path, report: dict[str, Any],
                  env: dict[str, str] | None = None) -> Iterator[SandboxStack]:
    """Run the whole stack on loopback, fresh SQLite under `work`, sandbox providers.

    Throwaway provider credentials (never written to var/); `env` adds or overrides
    variables. On a failed start the processes' log tails go into report["logs"].
    """
    from bot import sandbox
    from bot.migrate import upgrade

    database_url = f"sqlite:///{work / 'linli.db'}"
    upgrade(database_url)
    ports = Ports(hub=free_port(), rasa=free_port(), actions=free_port())
    full_env = {**sandbox.sandbox_environment(sandbox.generate_credentials(), {
        "LINLI_HOST": "127.0.0.1", "LINLI_PORT": str(ports.hub)}),
        "DATABASE_URL": database_url, **(env or {})}
    stack = Stack(model=model, ports=ports, env=full_env, log_dir=work / "logs")
    started = time.monotonic()
    stack.start()
    try:
        try:
            stack.wait_ready(timeout_s=300)
        except Exception:
            report["logs"] = {log.name: log.read_text(errors="replace")[-3000:]
                              for log in sorted((work / "logs").glob("*.log"))}
            raise
        report["startup_s"] = round(time.monotonic() - started, 1)
        stack.warm_up()
        yield SandboxStack(f"http://127.0.0.1:{ports.hub}", database_url, stack, full_env)
    finally:
        stack.stop()
