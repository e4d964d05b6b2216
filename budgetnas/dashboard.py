"""Serve optuna-dashboard on a budgetnas storage (SQLite, any RDB URL, or a journal file).

The dashboard shows the trials, the Pareto front of multi-objective studies, the per-epoch
curves and every user attribute the search stores (spec, params, mult-adds, ...), each trained
trial's note (its architecture, counts and recipe) and its learning curve as an artifact
(see :mod:`budgetnas.trialnotes`). It binds to
the loopback address by default: optuna-dashboard has no authentication.
"""

from __future__ import annotations

import signal
import socket
import threading
import warnings
from pathlib import Path
from typing import Any, Callable
from wsgiref import simple_server

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


def serve(storage: str | None = None, host: str = "127.0.0.1", port: int = 8080,
          on_ready: Callable[[], None] | None = None) -> None:
    """Block serving the dashboard until Ctrl-C or SIGTERM, then raise ``KeyboardInterrupt``.

    ``on_ready`` is called once the storage and the port have been checked, just before serving
    (the CLI prints the address then, never for a server that is refused).

    Why not ``optuna_dashboard.run_server``: it serves with bottle's wsgiref adapter, which
    swallows ``KeyboardInterrupt`` (so a stopped server looked like a clean exit), and a Ctrl-C
    that lands while a request is being answered is caught by wsgiref's own bare ``except``,
    which prints a traceback and serves on. Here a signal only asks the server to shut down,
    from another thread, between requests.
    """
    import optuna_dashboard

    url = normalise_url(storage)
    check_storage_exists(url)
    check_port(host, port)
    folder = artifact_dir(url)  # the trials' learning curves (budgetnas/trialnotes.py), when there are any
    store = None
    if folder is not None:  # even before the folder exists: a search may train its first trial while this serves
        from optuna.artifacts import FileSystemArtifactStore  # (the store touches no file until asked for one)

        store = FileSystemArtifactStore(str(folder))
    with warnings.catch_warnings():
        # Optuna's notes to a developer (e.g. "Some regimes for parameter ... have less than 2 trials" from
        # the importance panel on every page load) would flood the console the user started the server in.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"optuna(\.|$)")
        warnings.filterwarnings("ignore", category=UserWarning, message=r"Some regimes for parameter")
        app = optuna_dashboard.wsgi(open_storage(url), artifact_store=store)
        server_class = _IPv6Server if ":" in host else simple_server.WSGIServer
        with simple_server.make_server(host, port, app, server_class=server_class) as server:
            stopped = threading.Event()

            def stop(_signum: int, _frame: Any) -> None:
                if not stopped.is_set():
                    stopped.set()
                    threading.Thread(target=server.shutdown, daemon=True).start()  # not from serve_forever's thread

            previous = _install({signal.SIGINT: stop, signal.SIGTERM: stop})
            try:
                if on_ready is not None:
                    on_ready()
                server.serve_forever(poll_interval=0.2)
            finally:
                _install(previous)
    if stopped.is_set():
        raise KeyboardInterrupt


class _IPv6Server(simple_server.WSGIServer):
    address_family = socket.AF_INET6


def _install(handlers: dict[int, Any]) -> dict[int, Any]:
    """Set signal handlers (only the main thread may; elsewhere nothing changes); returns the previous ones."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}


def dashboard_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard"
