"""The explorer's web app: the page, its static files and the JSON API underneath (FastAPI; schema at
/openapi.json, interactive docs at /docs).

Questions become jobs answered one after the other; the page polls a job for progress and the streamed answer.
Given a :class:`SessionLoader`, the page and its static files are served while the session opens; the API waits
for it.
Every error reply is JSON ``{"error": message}`` with a 4xx status for a bad request, never a traceback.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from wherefrom.errors import WherefromError
from wherefrom.explorer.jobs import Job, JobQueue
from wherefrom.explorer.loading import SessionLoader
from wherefrom.explorer.schemas import AnswerView, AskRequest, ErrorReply, Info, JobView
from wherefrom.scoring.results import SIGN_AND_UNITS
from wherefrom.version import __version__

if TYPE_CHECKING:  # both import the model's whole stack: the page is served before they are loaded
    from wherefrom.explorer.answer import Answer
    from wherefrom.explorer.session import ExplorerSession

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
DOCS_PAGES = ("/docs", "/docs/oauth2-redirect", "/redoc")
ERRORS = {400: {"model": ErrorReply}, 404: {"model": ErrorReply}, 409: {"model": ErrorReply},
          422: {"model": ErrorReply}}


def create_app(session: ExplorerSession | SessionLoader) -> FastAPI:
    """The app serving ``session`` (or the session a loader is opening): one worker answers the questions in the
    order they come."""
    jobs = JobQueue()
    loader = session if isinstance(session, SessionLoader) else SessionLoader.loaded(session)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.close()

    app = FastAPI(title="wherefrom explorer", version=__version__, responses=ERRORS, lifespan=lifespan,
                  description="Ask a question of the model and see which training sequences influenced its answer. "
                              "Scores: " + SIGN_AND_UNITS + ".")
    app.state.loader, app.state.jobs = loader, jobs
    app.mount("/static", StaticFiles(directory=str(files("wherefrom.explorer") / "static")), name="static")
    _add_error_handlers(app)
    page = _environment().get_template("explorer.html.j2")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette's signature
        response = await call_next(request)
        if request.url.path not in DOCS_PAGES:  # FastAPI's own docs pages load Swagger UI / ReDoc from a CDN
            response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page.render(version=__version__))

    @app.get("/api/info", response_model=Info, summary="What the server serves")
    def info() -> Info:
        return Info(**loader.get().describe(), units=SIGN_AND_UNITS)

    @app.post("/api/questions", response_model=JobView, status_code=202, summary="Ask a question (returns a job)")
    def ask(request: AskRequest) -> JobView:
        job = jobs.submit(_work(loader.get(), request))
        return _job_view(jobs, job, 0)

    @app.get("/api/questions/{job_id}", response_model=JobView, summary="Progress, streamed answer and result")
    def poll(job_id: str, since: int = Query(0, ge=0, description="First event to return.")) -> JobView:
        return _job_view(jobs, _job(jobs, job_id), since)

    @app.post("/api/questions/{job_id}/cancel", response_model=JobView, summary="Stop a queued or running question")
    def cancel(job_id: str) -> JobView:
        job = _job(jobs, job_id)
        jobs.cancel(job)
        return _job_view(jobs, job, len(job.events))

    @app.get("/api/questions/{job_id}/report", response_class=HTMLResponse, summary="The answer as the HTML report")
    def report(job_id: str, bootstraps: int = Query(20, ge=0, le=1000, description="Bootstrap samples of the tail "
                                                                                    "fit's p-value (0 skips it).")
               ) -> Response:
        job = _job(jobs, job_id)
        if job.status != "done":
            raise HTTPException(409, f"question {job_id} is {job.status}; a report exists once it is done.")
        from wherefrom.outputs.report import write_report

        with tempfile.TemporaryDirectory() as folder:
            path = write_report(job.result.result, Path(folder) / "report.html", top_k=len(job.result.view.top),
                                title=f"wherefrom explorer: {job.result.view.prompt}", n_bootstrap=bootstraps)
            html = path.read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Disposition": f'attachment; filename="wherefrom-{job_id}.html"'})

    @app.post("/api/answer", response_model=AnswerView, summary="Ask and wait for the answer (for scripts)")
    def answer_now(request: AskRequest) -> AnswerView:
        job = jobs.submit(_work(loader.get(), request))
        job.finished.wait()
        if job.status == "failed":
            raise HTTPException(422, job.error)
        if job.status != "done":
            raise HTTPException(409, f"the question was {job.status} before it was answered.")
        return job.result.view

    return app


def _work(session: ExplorerSession, request: AskRequest):  # noqa: ANN202 - a job's work function
    """Check the request now (a bad one is a 400 before anything is queued) and return the work to queue."""
    if request.layers != "all" and request.layers not in session.blocks:
        raise HTTPException(400, f"layers {request.layers!r} is not available for this model; choose one of: all, "
                                 f"{', '.join(session.blocks) or '(no blocks: the model has one transformer layer)'}.")
    if request.normalize and request.layers != "all":
        raise HTTPException(400, "normalize ranks by the cosine over all tracked layers; ask with layers 'all'.")
    if request.normalize and session.index is not None and session.index.self_influence is None:
        raise HTTPException(400, "this gradient index stores no self-influence (built by an earlier wherefrom), "
                                 "which normalize needs; rebuild it with `wherefrom index ... --restart`.")
    try:
        query = session.make_query(request.prompt, request.completion)
    except WherefromError as error:
        raise HTTPException(400, str(error)) from None

    from wherefrom.explorer.answer import answer  # loaded with the session (SessionLoader), not with the page

    def work(job: Job) -> Answer:
        return answer(session, query, request, job)

    return work


def _job(jobs: JobQueue, job_id: str) -> Job:
    try:
        return jobs.get(job_id)
    except KeyError as error:
        raise HTTPException(404, error.args[0]) from None


def _job_view(jobs: JobQueue, job: Job, since: int) -> JobView:
    events = job.events[since:]
    done = job.status == "done"
    return JobView(id=job.id, status=job.status, position=jobs.position(job), events=events,
                   next_event=since + len(events), answer=job.result.view if done else None, error=job.error)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(_problem(e) for e in error.errors())
        return JSONResponse({"error": f"invalid request: {problems}."}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error ({type(error).__name__}): {error}"}, status_code=500)


def _problem(error: dict) -> str:
    """One validation error in words: which field, and what is wrong with it."""
    if error["type"] == "json_invalid":  # its location is a character offset into the body
        reason = str(error.get("ctx", {}).get("error", "it cannot be parsed")).rstrip(".")
        return f"the body is not valid JSON ({reason.lower()} at character {error['loc'][-1]}); send a JSON object " \
               "such as {\"prompt\": \"...\"}"
    field = ".".join(str(p) for p in error["loc"][1:]) or "the body"
    return f"{field}: {error['msg']}"


def _environment() -> Environment:
    return Environment(loader=PackageLoader("wherefrom.explorer", "templates"), autoescape=select_autoescape(
        default=True, default_for_string=True))
