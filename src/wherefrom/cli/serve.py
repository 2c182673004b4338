"""`wherefrom serve`: the explorer, a local web page over a run (or a gradient index) and its corpus."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from wherefrom.cli.common import DEVICE, DTYPE, app, err, run_action
from wherefrom.collector import collector_paused
from wherefrom.errors import WherefromError
from wherefrom.options import ExecutionOptions


@app.command()
def serve(
    index: Path | None = typer.Option(None, help="A gradient index (`wherefrom index`): ranks every sequence fast; "
                                                 "its run and corpus are read from it."),
    run: Path | None = typer.Option(None, help="A fitted run folder (`wherefrom fit`); without an index every "
                                               "question scans the whole corpus exactly (slow, exact)."),
    corpus: Path | None = typer.Option(None, help="The corpus to rank (default: the one the run was fitted on)."),
    demo: Path = typer.Option(Path("wherefrom-demo"), help="With neither --index nor --run: the folder `wherefrom "
                                                           "demo` wrote, whose model and corpus are served."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on. Anything but a loopback address lets other "
                                               "machines ask questions and read the corpus."),
    port: int = typer.Option(8000, help="Port to listen on."),
    threads: int = typer.Option(2, help="CPU threads for the model."),
    device: str = DEVICE,
    dtype: str = DTYPE,
) -> None:
    """Start the explorer: a local web page to ask the model a question and see the training sequences that most
    influenced its answer, token by token (JSON API documented at /docs)."""

    def start():  # noqa: ANN202 - the server and its thread, once the session is open
        import threading

        import torch
        import uvicorn

        from wherefrom.explorer.app import create_app
        from wherefrom.explorer.demo_folder import demo_sources
        from wherefrom.explorer.loading import SessionLoader

        if not 0 <= port <= 65535:
            raise WherefromError(f"--port must be between 0 and 65535, got {port}.")
        if corpus is not None and run is None and index is None:
            raise WherefromError("--corpus needs --run RUN (the fitted run to score it with).")
        if not _loopback(host):
            err.print(f"[bold yellow]warning:[/] listening on {host}: anyone who can reach this machine can ask "
                      "questions and read the training corpus. Use --host 127.0.0.1 to keep it local.")
        torch.set_num_threads(threads)
        execution = ExecutionOptions(device=device, dtype=dtype)
        sources = (run, index) if (run or index) else demo_sources(demo)  # no demo there: refused before serving
        _check_inputs(*sources)

        def open_session():  # noqa: ANN202 - in the main thread, while the page is served
            from wherefrom.explorer.session import ExplorerSession

            return ExplorerSession.open(sources[0], corpus, sources[1], execution)

        loader = SessionLoader()
        server = uvicorn.Server(uvicorn.Config(create_app(loader), host=host, port=port, log_level="warning"))
        serving = threading.Thread(target=server.run, name="wherefrom-server", daemon=True)
        serving.start()  # the page is served while the session opens here, in the main thread (see loading.py)
        err.print(f"wherefrom explorer: [bold]http://{_url_host(host)}:{port}/[/] (API docs at /docs; Ctrl+C stops); "
                  "loading the model, curvature and corpus…")
        try:
            loader.open(open_session)
        except BaseException:
            _stop(server, serving)
            raise
        return server, serving

    def action() -> None:
        with collector_paused(freeze=True):  # start-up: what it loads lives as long as the server (collector.py)
            server, serving = start()
        try:
            serving.join()
        except BaseException:
            _stop(server, serving)
            raise
        if not server.started:
            raise WherefromError(f"could not listen on {host}:{port} (is the port in use?): pick another with --port.")

    run_action(action)


def _stop(server, serving) -> None:  # noqa: ANN001 - uvicorn's Server, its thread
    """Stop the web server and wait for its thread."""
    server.should_exit = True
    serving.join()


def _check_inputs(run: Path | None, index: Path | None) -> None:
    """Refuse a run or index folder of the wrong kind (or an unreadable index) before the page is served; the
    session opens them fully afterwards."""
    from wherefrom.folders import describe, folder_kind
    from wherefrom.index.store import GradientIndex

    if index is not None:
        GradientIndex.open(index)
    if run is not None and (found := folder_kind(Path(run))) != "run":
        raise WherefromError(f"{run} is {describe(found)}, not {describe('run')}: give the folder that "
                             "`wherefrom fit --out` wrote.")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
