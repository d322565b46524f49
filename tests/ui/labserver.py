"""A throw-away JupyterLab server for the browser tests, isolated from the user's own setup.

The server runs from the same environment as pytest (`make test-ui` uses `.venv`), listens on
127.0.0.1 on a port the OS picks, requires a random token, and keeps its config, data, runtime,
settings, workspaces and IPython directories in a temporary folder: a user's settings, a stale
user-level ``ssdlib`` kernelspec or an IPython startup file cannot change what the test sees.
The lab settings written here turn off autosave (the test never writes the notebook), the news
and update checks (nothing may leave the machine) and notebook windowing (every cell is in the
DOM, so the test can find any cell's output).

`stop` sends SIGTERM to the server's process group: the server then shuts its kernels down.
Kernels live in process groups of their own, so any that survive are found by the connection
file they were given (under our runtime directory) and killed by pid.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STARTUP_TIMEOUT_S = 90.0  # JupyterLab starts in ~3 s on an idle core; CI's 2 cores are shared
SHUTDOWN_TIMEOUT_S = 15.0  # the server stops its kernels first (ipykernel answers in ~1 s each)
POLL_S = 0.25  # how often to look for the server's info file and /api/status
LOG_TAIL_LINES = 40  # enough of the server log to see a traceback in a failure message
HTTP_TIMEOUT_S = 10.0  # one REST call to a local server
PR_SET_PDEATHSIG = 1  # prctl option from <linux/prctl.h>: a signal for when the parent dies

# User settings, one file per plugin, in the temporary JUPYTERLAB_SETTINGS_DIR.
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    # The test clicks and types but never saves: the notebook in the repo must stay as committed.
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    # No "get Jupyter news?" toast over the page, and no request to jupyter.org.
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    # 'none' attaches every cell to the DOM; the default windowing detaches cells out of view.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}

# Environment variables that would point Jupyter at the user's own files; dropped for the server.
_USER_JUPYTER_VARS = (
    "JUPYTER_PATH",
    "JUPYTER_CONFIG_PATH",
    "JUPYTER_PREFER_ENV_PATH",
    "JUPYTER_PLATFORM_DIRS",
    "JUPYTER_TOKEN",
    "JUPYTERLAB_DIR",
    "PYTHONSTARTUP",
)


class LabServerError(RuntimeError):
    """The JupyterLab server did not come up, or did not answer as expected."""


@dataclass
class LabServer:
    """A running server: its URL, token, directories and log. Use :func:`start_lab`."""

    proc: subprocess.Popen
    base_url: str  # e.g. http://127.0.0.1:41234/ (ends with '/')
    token: str
    root_dir: Path  # what the file browser shows; notebook paths are relative to it
    home: Path  # the temporary folder holding every Jupyter directory of this server
    log_path: Path
    _log_file: Any = field(repr=False, default=None)

    @property
    def runtime_dir(self) -> Path:
        return self.home / "runtime"

    def lab_url(self, notebook: str) -> str:
        """The URL that opens ``notebook`` (relative to ``root_dir``) in JupyterLab."""
        # `reset` starts from an empty workspace, whatever a previous run left behind.
        return f"{self.base_url}lab/tree/{notebook}?reset&token={self.token}"

    def api(self, method: str, path: str, body: dict | None = None) -> Any:
        """Call the REST API (``path`` like ``api/kernels``); returns the decoded JSON or None."""
        return _request(self.base_url + path, self.token, method, body)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _request(url: str, token: str, method: str = "GET", body: dict | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"token {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
        payload = resp.read()
    return json.loads(payload) if payload else None


def jupyter_executable() -> Path:
    """The ``jupyter`` next to the running interpreter: ``.venv/bin/jupyter`` under make."""
    exe = Path(sys.executable).parent / "jupyter"
    if not exe.exists():
        raise LabServerError(
            f"no jupyter next to {sys.executable} ({exe} is missing): run the tests from the "
            "project environment, e.g. `make test-ui`, which installs JupyterLab into .venv"
        )
    return exe


def _write_settings(settings_dir: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        package, _, name = plugin.rpartition("/")
        target = settings_dir / package / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values, indent=2))


def server_env(home: Path) -> dict[str, str]:
    """The server's environment: ours, with every Jupyter/IPython directory inside ``home``."""
    env = {k: v for k, v in os.environ.items() if k not in _USER_JUPYTER_VARS}
    dirs = {
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
        "IPYTHONDIR": "ipython",
    }
    for var, name in dirs.items():
        (home / name).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / name)
    _write_settings(home / "lab-settings")
    return env


def server_command(
    root_dir: Path, token: str, checkpoint_dir: Path, extra_args: tuple[str, ...] = ()
) -> list[str]:
    """The ``jupyter lab`` command line: loopback only, OS-chosen port, nothing from the web."""
    args = [
        str(jupyter_executable()),
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",  # the OS picks a free port; we read it from the server's info file
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        f"--IdentityProvider.token={token}",
        # Checkpoints (made when a notebook opens) go to our temp folder, not notebooks/.
        f"--FileCheckpoints.checkpoint_dir={checkpoint_dir}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # the default 'pypi' manager would query PyPI
        # window.jupyterapp lets the test read cell outputs and the kernel status from the model.
        "--LabApp.expose_app_in_browser=True",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # CI containers run as root; Jupyter refuses it otherwise
    return [*args, *extra_args]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when pytest dies, even by SIGKILL (Linux only).

    SIGTERM makes the server shut its kernels down, so an interrupted run leaves nothing behind.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_lab(root_dir: Path, home: Path, extra_args: tuple[str, ...] = ()) -> LabServer:
    """Start JupyterLab serving ``root_dir`` and wait until its REST API answers.

    Args:
        root_dir: the folder the server shows (the notebooks' folder).
        home: an empty temporary folder for the server's directories and its log.
        extra_args: more command-line options (the failure test passes a bad one).

    Raises:
        LabServerError: the server exited or did not answer within STARTUP_TIMEOUT_S; the
            message carries the tail of its log. The process group is stopped first.
    """
    token = secrets.token_hex(24)
    env = server_env(home)
    log_path = home / "jupyterlab.log"
    log_file = log_path.open("w")
    cmd = server_command(root_dir, token, home / "checkpoints", extra_args)
    proc = subprocess.Popen(
        cmd,
        cwd=root_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so teardown can signal all of it
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    server = LabServer(proc, "", token, root_dir, home, log_path, log_file)
    try:
        server.base_url = _wait_until_up(server)
    except BaseException:
        stop_lab(server)
        raise
    return server


def _wait_until_up(server: LabServer) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    info_file = server.runtime_dir / f"jpserver-{server.proc.pid}.json"
    last_error = "no server info file yet"
    while time.monotonic() < deadline:
        code = server.proc.poll()
        if code is not None:
            raise LabServerError(
                f"JupyterLab exited with code {code} before it answered.\n"
                f"command: {' '.join(server.proc.args)}\n"
                f"--- last lines of {server.log_path} ---\n{server.log_tail()}"
            )
        if info_file.exists():
            try:
                port = json.loads(info_file.read_text())["port"]
                base_url = f"http://127.0.0.1:{port}/"
                _request(base_url + "api/status", server.token)
                return base_url
            except (OSError, ValueError, KeyError, urllib.error.URLError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(POLL_S)
    raise LabServerError(
        f"JupyterLab did not answer on /api/status within {STARTUP_TIMEOUT_S:.0f} s "
        f"(last error: {last_error}).\n"
        f"--- last lines of {server.log_path} ---\n{server.log_tail()}"
    )


def _pids_using(path_fragment: str) -> list[int]:
    """Pids of our own processes whose command line mentions ``path_fragment``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended meanwhile, or is not ours to read
        if path_fragment in cmdline:
            pids.append(int(entry.name))
    return pids


def stop_lab(server: LabServer) -> None:
    """Stop the server (SIGTERM to its group, SIGKILL after SHUTDOWN_TIMEOUT_S) and its kernels."""
    proc = server.proc
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything the server started in its own group
    except ProcessLookupError:
        pass
    # Kernels run in sessions of their own; each was handed a connection file in our runtime dir.
    if Path("/proc").is_dir():
        for pid in _pids_using(str(server.runtime_dir)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if server._log_file is not None:
        server._log_file.close()


def execute_in_kernel(
    server: LabServer, kernel_id: str, code: str, timeout_s: float = 60.0
) -> dict[str, Any]:
    """Run ``code`` in a server-managed kernel over the server's websocket, as the browser does.

    Returns:
        ``{"status": "ok" | "error", "stdout": str, "stderr": str, "error": str | None}``.

    Raises:
        LabServerError: no ``execute_reply`` within ``timeout_s``.
    """
    import uuid

    import websocket  # websocket-client, a dependency of jupyter_server

    session = uuid.uuid4().hex
    msg_id = uuid.uuid4().hex
    ws_url = server.base_url.replace("http://", "ws://", 1)
    ws = websocket.create_connection(
        f"{ws_url}api/kernels/{kernel_id}/channels?session_id={session}",
        header=[f"Authorization: token {server.token}"],
        timeout=timeout_s,
    )
    request = {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": session,
            "username": "ui-test",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }
    result: dict[str, Any] = {"status": None, "stdout": "", "stderr": "", "error": None}
    deadline = time.monotonic() + timeout_s
    idle = False
    try:
        ws.send(json.dumps(request))
        while result["status"] is None or not idle:
            if time.monotonic() > deadline:
                raise LabServerError(
                    f"kernel {kernel_id} sent no execute_reply within {timeout_s:.0f} s "
                    f"(so far: {result}).\n--- server log ---\n{server.log_tail()}"
                )
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                result[content["name"]] += content["text"]
            elif kind == "error":
                result["error"] = f"{content['ename']}: {content['evalue']}"
            elif kind == "execute_reply":
                result["status"] = content["status"]
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True  # all output of this request has been sent
    finally:
        ws.close()
    return result
