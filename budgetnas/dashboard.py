"""Serve optuna-dashboard on a budgetnas storage (SQLite, any RDB URL, or a journal file).

The dashboard shows the trials, the Pareto front of multi-objective studies, the per-epoch
curves and every user attribute the search stores (spec, params, mult-adds, ...), each trained
trial's note (its architecture, counts and recipe) and its learning curve as an artifact
(see :mod:`budgetnas.trialnotes`). It binds to
the loopback address by default: optuna-dashboard has no authentication.
"""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

from budgetnas.errors import StorageError, UsageError
from budgetnas.storage import normalise_url, open_storage
from budgetnas.trialnotes import artifact_dir


def check_storage_exists(url: str) -> None:
    """A dashboard on a missing SQLite or journal file would silently create an empty one."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):]).expanduser()
    elif url.startswith("journal:"):
        path = Path(url[len("journal:"):]).expanduser()
    else:
        return
    if not path.is_file():
        raise StorageError(f"no storage file at {path}; run 'budgetnas search' first or give --storage URL")


def check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve host {host!r} ({exc.strerror}); use e.g. --host 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None


def serve(storage: str | None = None, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Block serving the dashboard until interrupted (Ctrl-C)."""
    import optuna_dashboard

    url = normalise_url(storage)
    check_storage_exists(url)
    check_port(host, port)
    folder = artifact_dir(url)  # the trials' learning curves (budgetnas/trialnotes.py), when there are any
    store = None
    if folder is not None and folder.is_dir():
        from optuna.artifacts import FileSystemArtifactStore

        store = FileSystemArtifactStore(str(folder))
    with warnings.catch_warnings():
        # Optuna's notes to a developer (e.g. "Some regimes for parameter ... have less than 2 trials" from
        # the importance panel on every page load) would flood the console the user started the server in.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"optuna(\.|$)")
        warnings.filterwarnings("ignore", category=UserWarning, message=r"Some regimes for parameter")
        optuna_dashboard.run_server(open_storage(url), host=host, port=port, artifact_store=store)


def dashboard_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard"
