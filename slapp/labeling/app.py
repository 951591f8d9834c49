"""The labeling server's web application (Starlette): sign-in, the page, its API and files.

The routes:

* ``GET /``: the labeling page when signed in, else the sign-in form;
* ``POST /signin``, ``POST /signout``: exchange a labeler's token for a session
  cookie (a random id whose SHA-256 is kept in ``labeler_sessions``), and end
  the session;
* ``GET /static/...``: the page's own scripts and styles (no data; no session
  needed);
* ``GET /artifacts/<index>/<path>``: a file under a served artifact directory,
  with byte ranges (``206``) so the clip can seek;
* ``GET /api/next``, ``GET /api/tasks/<id>``, ``GET /api/tasks/<id>/trace``,
  ``GET /api/tasks/<id>/masks``, ``GET /api/tasks/<id>/correlation.png``,
  ``GET /api/progress``, ``GET /api/labels/mine``, ``POST /api/labels``: the
  page's JSON API (see each handler).

Every route but ``/``, ``/signin`` and ``/static`` needs a session of a labeler
who is not revoked: API routes and files answer ``401`` with JSON. Each API
request runs in Starlette's thread pool, in one transaction (the session check
included) on a pool of connections.
"""
import html
import json
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import psycopg2.errors
import psycopg2.extras
import psycopg2.pool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, \
    Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from slapp.labeling import assignment, roi_views
from slapp.labeling.labelers import hash_secret, new_secret

STATIC_DIR = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "slapp_session"
MAX_NOTE_CHARS = 2000

# Nothing from another origin: the page works offline and leaks nothing.
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' blob: data:; media-src 'self'; "
     b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]

SESSION_QUERY = """
SELECT labelers.id, labelers.name FROM labeler_sessions AS sessions
JOIN labelers ON labelers.id = sessions.labeler_id
WHERE sessions.session_hash = %s AND sessions.expires_at > now()
  AND labelers.revoked_at IS NULL AND labelers.token_hash IS NOT NULL
"""


@dataclass
class ServerConfig:
    """What one server serves.

    Attributes
    ----------
    credentials : dict
        The labeling database's connection parameters.
    job_ids : list of int
        The labeling jobs served.
    job_names : list of str
        Their names, for the page.
    artifact_roots : list of str
        The directories whose files are served, ``/artifacts/<index>/``.
    artifact_override : bool
        True when ``artifact_roots`` is the one directory given on the command line.
    session_hours : float
        How long a sign-in lasts.
    secure_cookie : bool
        Mark the cookie ``Secure`` (behind a TLS proxy).
    lease_seconds : float
        How long a task offered to a labeler counts as theirs when others ask.
    pool_size : int
        Database connections at most.
    """

    credentials: dict
    job_ids: list
    job_names: list
    artifact_roots: list
    artifact_override: bool = False
    session_hours: float = 12.0
    secure_cookie: bool = False
    lease_seconds: float = 600.0
    pool_size: int = 16


class Database:
    """A thread-safe pool of connections; :meth:`transaction` yields a dict-row cursor.

    A thread waits for a free connection (psycopg2's pool would raise instead).
    """

    def __init__(self, credentials: dict, size: int):
        self._credentials = dict(credentials)
        self._pool = None
        self._size = size
        self._lock = threading.Lock()
        self._free = threading.BoundedSemaphore(size)

    def _get_pool(self):
        with self._lock:
            if self._pool is None:
                # every connection opened now: the first burst of requests (labelers
                # coming back after a restart) does not wait for connections
                self._pool = psycopg2.pool.ThreadedConnectionPool(
                    self._size, self._size, application_name="slapp-labeling-server",
                    connect_timeout=10, **self._credentials)
            return self._pool

    def open(self) -> None:
        """Open the pool's connections now (raises if the database is unreachable)."""
        self._get_pool()

    @contextmanager
    def transaction(self):
        """A cursor whose statements commit together; a broken connection is dropped."""
        pool = self._get_pool()
        with self._free:
            connection = pool.getconn()
            broken = False
            try:
                with connection.cursor(
                        cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                    yield cursor
                connection.commit()
            except BaseException as error:
                broken = connection.closed != 0 or isinstance(
                    error, (psycopg2.OperationalError, psycopg2.InterfaceError))
                if not connection.closed:
                    connection.rollback()
                raise
            finally:
                pool.putconn(connection, close=broken)

    def run(self, work, *args):
        """Run ``work(cursor, *args)`` in one transaction and return its result."""
        with self.transaction() as cursor:
            return work(cursor, *args)

    def close(self) -> None:
        """Close every connection."""
        if self._pool is not None:
            self._pool.closeall()


@dataclass
class Leases:
    """Tasks offered and not yet answered: one per labeler, so others are sent elsewhere."""

    seconds: float
    _by_labeler: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pending_for(self, labeler_id: int) -> dict[int, int]:
        """Task id -> unexpired leases of other labelers (call with ``lock`` held)."""
        now = time.monotonic()
        pending: dict[int, int] = {}
        for other, (task_id, expires) in list(self._by_labeler.items()):
            if expires < now:
                del self._by_labeler[other]
            elif other != labeler_id:
                pending[task_id] = pending.get(task_id, 0) + 1
        return pending

    def offer(self, labeler_id: int, task_id: int | None) -> None:
        """Record the task offered to a labeler (None: nothing); call with ``lock`` held."""
        if task_id is None:
            self._by_labeler.pop(labeler_id, None)
        else:
            self._by_labeler[labeler_id] = (task_id, time.monotonic() + self.seconds)

    def answered(self, labeler_id: int, task_id: int) -> None:
        """The labeler labelled the task: their lease on it ends."""
        with self.lock:
            if self._by_labeler.get(labeler_id, (None,))[0] == task_id:
                del self._by_labeler[labeler_id]


# What an API route's work returns without a session, and its body when not JSON.
NOT_SIGNED_IN, INVALID_BODY = object(), object()
LABEL_ERROR_STATUS = {assignment.QUOTA_REACHED: 409, assignment.UNKNOWN_TASK: 404,
                      assignment.NOT_YOURS: 409}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><link rel=\"icon\" href=\"data:,\">"
        "<link rel=\"stylesheet\" href=\"/static/labeling.css\"></head>"
        f"<body>{body}</body></html>", status_code=status)


def signin_page(message: str = "", status: int = 200) -> HTMLResponse:
    """The sign-in form: one field labelled "Token" and a button "Sign in"."""
    notice = (f"<p class=\"error\" role=\"alert\">{html.escape(message)}</p>"
              if message else "")
    return _page("Sign in - slapp labeling", (
        "<main class=\"signin\"><h1>slapp labeling</h1>" + notice +
        "<form method=\"post\" action=\"/signin\">"
        "<label for=\"token\">Token</label> "
        "<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required "
        "autofocus> <button type=\"submit\">Sign in</button></form>"
        "<p class=\"hint\">Ask the person running this labeling session for your token."
        "</p></main>"), status)


def _json_body_error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(config: ServerConfig) -> Starlette:
    """Build the application serving ``config``'s jobs.

    Parameters
    ----------
    config : ServerConfig
        Jobs, artifact directories, database and session settings.

    Returns
    -------
    starlette.applications.Starlette
        An ASGI application (wrapped with the security headers).
    """
    db = Database(config.credentials, config.pool_size)
    leases = Leases(config.lease_seconds)
    job_ids = list(config.job_ids)
    roots = [str(Path(root)) for root in config.artifact_roots]
    resolved_roots = [Path(root).resolve() for root in roots]

    def signed_in(cursor, request: Request) -> dict | None:
        """The labeler of the request's session, or None (no, expired or revoked session)."""
        session = request.cookies.get(SESSION_COOKIE)
        if not session:
            return None
        cursor.execute(SESSION_QUERY, (hash_secret(session),))
        return cursor.fetchone()

    def api(work, reads_json: bool = False, after_commit=None):
        """A JSON API route: 401 without a session, else ``work(cursor, labeler, request,
        body)`` in a thread, in one transaction with the session check.

        ``body`` is the request's JSON when ``reads_json`` (``INVALID_BODY`` when it is
        not JSON). A :class:`~slapp.labeling.assignment.LabelException` rolls the
        transaction back and answers with its reason. ``after_commit(labeler, body,
        result)`` runs once the transaction is committed.
        """
        async def endpoint(request: Request):
            body = None
            if reads_json:
                try:
                    body = await request.json()
                except (json.JSONDecodeError, UnicodeDecodeError):
                    body = INVALID_BODY

            def run(cursor):
                labeler = signed_in(cursor, request)
                if labeler is None:
                    return None, NOT_SIGNED_IN
                return labeler, work(cursor, labeler, request, body)
            try:
                labeler, result = await run_in_threadpool(db.run, run)
            except assignment.LabelException as error:
                return JSONResponse({"error": str(error), "reason": error.reason},
                                    status_code=LABEL_ERROR_STATUS.get(error.reason, 400))
            except psycopg2.errors.UniqueViolation:
                # the same request id sent twice at the same moment: the other one stored it
                return JSONResponse({"error": "submitted twice at once; stored once",
                                     "reason": "conflict"}, status_code=409)
            if result is NOT_SIGNED_IN:
                return JSONResponse({"error": "not signed in"}, status_code=401)
            if after_commit is not None:
                after_commit(labeler, body, result)
            return result if isinstance(result, Response) else JSONResponse(result)
        return endpoint

    async def index(request: Request):
        if await run_in_threadpool(db.run, signed_in, request) is None:
            return signin_page()
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"cache-control": "no-store"})

    def _create_session(cursor, token: str) -> str | None:
        cursor.execute("SELECT id, revoked_at FROM labelers WHERE token_hash = %s",
                       (hash_secret(token),))
        labeler = cursor.fetchone()
        if labeler is None or labeler["revoked_at"] is not None:
            return None
        session = new_secret()
        cursor.execute("DELETE FROM labeler_sessions WHERE labeler_id = %s "
                       "AND expires_at < now()", (labeler["id"],))
        cursor.execute(
            "INSERT INTO labeler_sessions (labeler_id, session_hash, expires_at) "
            "VALUES (%s, %s, now() + make_interval(secs => %s))",
            (labeler["id"], hash_secret(session), config.session_hours * 3600))
        return session

    async def signin(request: Request):
        form = await request.form()
        token = str(form.get("token", "")).strip()
        session = await run_in_threadpool(db.run, _create_session, token) if token else None
        if session is None:
            return signin_page("That token is not valid (or was revoked).", 401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, session, max_age=int(config.session_hours * 3600),
                            httponly=True, samesite="strict", secure=config.secure_cookie,
                            path="/")
        return response

    async def signout(request: Request):
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            await run_in_threadpool(db.run, lambda cursor: cursor.execute(
                "DELETE FROM labeler_sessions WHERE session_hash = %s",
                (hash_secret(session),)))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def next_task(cursor, labeler, request, body) -> dict:
        """``{"labeler", "jobs", "task", "progress"}``; ``task`` null: nothing left."""
        with leases.lock:  # one offer at a time, so two labelers are not sent to one slot
            task, progress = assignment.next_task_and_progress(
                cursor, labeler["id"], job_ids, leases.pending_for(labeler["id"]))
            leases.offer(labeler["id"], task and task["labeling_task_id"])
        view = task and roi_views.task_view(cursor, task["labeling_task_id"], labeler["id"],
                                             job_ids, roots, config.artifact_override)
        return {"labeler": labeler["name"], "jobs": config.job_names, "task": view,
                "progress": progress}

    def task_route(reader, respond=JSONResponse):
        def work(cursor, labeler, request, body):
            try:
                task_id = int(request.path_params["task_id"])
            except ValueError:
                task_id = None
            found = task_id is not None and reader(cursor, task_id, labeler)
            if not found:
                return _json_body_error("no such task in the jobs served", 404)
            return respond(found)
        return api(work)

    task = task_route(lambda cursor, task_id, labeler: roi_views.task_view(
        cursor, task_id, labeler["id"], job_ids, roots, config.artifact_override))
    trace = task_route(lambda cursor, task_id, _: roi_views.trace(cursor, task_id, job_ids))
    masks = task_route(lambda cursor, task_id, _: roi_views.masks(cursor, task_id, job_ids))
    correlation = task_route(
        lambda cursor, task_id, _: roi_views.correlation_png(cursor, task_id, job_ids),
        lambda content: Response(content, media_type="image/png",
                                 headers={"cache-control": "private, max-age=3600"}))

    def release_lease(labeler, body, response) -> None:
        # after the commit: a labeler offered a task now counts the label just stored
        if response.status_code in (200, 201):
            leases.answered(labeler["id"], int(body["labeling_task_id"]))

    def progress(cursor, labeler, request, body) -> dict:
        """The labeler's progress: see :func:`slapp.labeling.assignment.progress`."""
        return assignment.progress(cursor, labeler["id"], job_ids)

    def my_labels(cursor, labeler, request, body) -> dict:
        """The labeler's 50 latest current labels, newest first."""
        cursor.execute(
            "SELECT labels.labeling_task_id, labels.label, labels.note, labels.created_at, "
            "tasks.roi_id FROM roi_labels AS labels "
            "JOIN labeling_tasks AS tasks ON tasks.id = labels.labeling_task_id "
            "WHERE labels.labeler_id = %s AND labels.superseded_by IS NULL "
            "AND tasks.labeling_job_id = ANY(%s::int[]) "
            "ORDER BY labels.created_at DESC, labels.id DESC LIMIT 50",
            (labeler["id"], job_ids))
        return {"labels": [{**row, "created_at": row["created_at"].isoformat()}
                           for row in cursor.fetchall()]}

    def submit(cursor, labeler, request, body):
        """Store a label: ``{"labeling_task_id", "label", "note", "seconds_shown",
        "view_settings", "request_id", "source"}`` (source ``page``, the default, or
        ``simulated`` for a benchmark's labelers).

        201 with the row's id; 200 when the ``request_id`` was stored before;
        409 when the task has all its labels; 400 for a malformed body.
        """
        try:
            task_id = int(body["labeling_task_id"])
            note = body.get("note") or None
            seconds = body.get("seconds_shown")
            view_settings = body.get("view_settings") or {}
            request_id = body.get("request_id")
            source = body.get("source", "page")
            if source not in ("page", "simulated") or not isinstance(view_settings, dict) or (
                    request_id is not None and not isinstance(request_id, str)) or (
                    note is not None and not isinstance(note, str)):
                raise ValueError
            seconds = None if seconds is None else float(seconds)
        except (ValueError, KeyError, TypeError, AttributeError):
            return _json_body_error("expected JSON with labeling_task_id and label")
        if note is not None and len(note) > MAX_NOTE_CHARS:
            return _json_body_error(f"a note holds at most {MAX_NOTE_CHARS} characters")
        stored = assignment.submit_label(
            cursor, labeler["id"], task_id, body.get("label"), note=note,
            seconds_shown=seconds, view_settings=view_settings, source=source,
            request_id=request_id, job_ids=job_ids)
        return JSONResponse({"id": stored.id, "labeling_task_id": stored.labeling_task_id,
                             "label": stored.label, "replayed": stored.replayed,
                             "superseded_id": stored.superseded_id},
                            status_code=200 if stored.replayed else 201)

    async def artifact(request: Request):
        if await run_in_threadpool(db.run, signed_in, request) is None:
            return JSONResponse({"error": "not signed in"}, status_code=401)
        try:
            root = resolved_roots[int(request.path_params["index"])]
        except (ValueError, IndexError):
            return Response(status_code=404)
        path = (root / request.path_params["path"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return Response(status_code=404)
        return FileResponse(path, headers={"cache-control": "private, max-age=3600"})

    routes = [
        Route("/", index),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/api/next", api(next_task)),
        Route("/api/progress", api(progress)),
        Route("/api/labels/mine", api(my_labels)),
        Route("/api/labels", api(submit, reads_json=True, after_commit=release_lease),
              methods=["POST"]),
        Route("/api/tasks/{task_id}", task),
        Route("/api/tasks/{task_id}/trace", trace),
        Route("/api/tasks/{task_id}/masks", masks),
        Route("/api/tasks/{task_id}/correlation.png", correlation),
        Route("/artifacts/{index}/{path:path}", artifact),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    @asynccontextmanager
    async def lifespan(_app):
        await run_in_threadpool(db.open)
        yield
        db.close()

    app = Starlette(routes=routes, lifespan=lifespan)

    async def with_headers(scope, receive, send):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)
        await app(scope, receive, send_with_headers if scope["type"] == "http" else send)
    return with_headers
