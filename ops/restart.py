"""Rolling restart of a host: `image-server restart -e ENV` (`make restart`).

One process at a time, through supervisord's XML-RPC interface: every
frontend, then every processor, then the uploader, the status server and the
janitor. Each is stopped (SIGTERM: a frontend stops listening, answers what
it holds and closes each connection after its next answer; a processor
finishes and acks its jobs), started again, and the next one waits until the
new process serves (its `image_server_process_serving` figure is 1). The
other frontends share the port meanwhile, so clients see no failed request;
that takes two frontends or more. New processes read the config and the code
as they are now: this is how a config change or a deploy goes live.
"""

from __future__ import annotations

import re
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from common import metrics, program
from common.settings import REPO_ROOT, Settings

ORDER = ("frontend", "processor", "uploader", "status", "janitor")
SERVES = {"frontend", "processor", "uploader"}  # report image_server_process_serving
_POLL_S = 0.2


class Supervisor:
    """The calls of supervisord's XML-RPC interface used here, typed."""

    def __init__(self, socket_path: Path) -> None:
        transport = SupervisorTransport(None, None, f"unix://{socket_path}")
        self._rpc: Any = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def processes(self) -> list[dict[str, Any]]:
        return list(self._rpc.supervisor.getAllProcessInfo())

    def restart(self, name: str) -> int:
        """Stop `name` (waiting for it to exit), start it (waiting until it runs); its pid."""
        self._rpc.supervisor.stopProcess(name, True)
        self._rpc.supervisor.startProcess(name, True)
        return int(self._rpc.supervisor.getProcessInfo(name)["pid"])


def wait_serving(metrics_dir: Path, pid: int, timeout_s: float) -> bool:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if pid in metrics.serving_pids(metrics_dir):
            return True
        time.sleep(_POLL_S)
    return False


def program_of(info: dict[str, Any]) -> str:
    """The program of a supervisord process: `frontend` of `image-server:frontend_1`."""
    return re.sub(r"_\d+$", "", str(info["name"]))


def restart(supervisor: Supervisor, settings: Settings, timeout_s: float) -> list[str]:
    """Restart every running process of ORDER in turn; the names of those that
    did not come back serving (empty: all did)."""
    running = [
        info
        for info in supervisor.processes()
        if program_of(info) in ORDER and info["statename"] == "RUNNING"
    ]
    running.sort(key=lambda info: (ORDER.index(program_of(info)), info["name"]))
    frontends = sum(1 for info in running if program_of(info) == "frontend")
    if frontends < 2:
        print(f"warning: {frontends} frontend process(es): its restart refuses connections")
    failed = []
    for info in running:
        name = f"{info['group']}:{info['name']}"
        started = time.monotonic()
        pid = supervisor.restart(name)
        serves = program_of(info) in SERVES
        ok = not serves or wait_serving(settings.metrics_dir, pid, timeout_s)
        if not serves:
            state = "running"
        else:
            state = "serving" if ok else f"NOT serving after {timeout_s:.0f} s"
        print(f"{name}: pid {info['pid']} -> {pid}, {state} ({time.monotonic() - started:.1f} s)")
        if not ok:
            failed.append(name)
            break  # a new process that does not serve: stop before taking down the next
    return failed


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = program.argument_parser(__doc__.splitlines()[0], prog)
    parser.add_argument(
        "--socket",
        type=Path,
        default=REPO_ROOT / "var" / "run" / "supervisor.sock",
        help="supervisord's unix socket",
    )
    parser.add_argument(
        "--timeout", type=program.positive(float), default=90.0, help="seconds for each to serve"
    )
    args = parser.parse_args(argv)
    settings = program.load_settings(args, announce=True)
    if not args.socket.is_socket():
        sys.exit(f"no supervisord socket at {args.socket}: is supervisord running (make run)?")
    failed = restart(Supervisor(args.socket), settings, args.timeout)
    if failed:
        sys.exit(f"stopped the rolling restart: {', '.join(failed)} did not come back serving")
    print("rolling restart done")


if __name__ == "__main__":
    main()
