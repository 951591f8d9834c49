"""Serve labeling jobs to labelers in their browsers, writing labels to the labeling database.

::

    python -m slapp.labeling.serve --labeling_job pilot --port 8080
    python -m slapp.labeling.serve --labeling_job pilot rerun --port 8080 \\
        --artifact_dir /mnt/labeling/artifacts --host 0.0.0.0

Labelers sign in with the token ``python -m slapp.labeling.labelers --add``
printed for them. The server listens on 127.0.0.1 unless ``--host`` says
otherwise; to reach it from other machines put a reverse proxy with TLS in
front (see docs/labeling_server.rst) and pass ``--secure_cookie``. The files
shown come from the artifact directories recorded with the jobs' ROI manifests
(``--artifact_dir`` serves one directory instead, for files that were moved);
only files under them are served. Stop it with Ctrl-C: every label
acknowledged to a page is committed already.
"""
import socket
import sys
import warnings
from pathlib import Path

import argschema
import marshmallow as mm
import uvicorn

from slapp.errors import SlappError
from slapp.labeling.app import ServerConfig, create_app
from slapp.labeling.assignment import job_ids_by_name
from slapp.utils.cli import run_main
from slapp.utils.files import write_json_atomically
from slapp.utils.query_utils import DbConnection, get_db_credentials, label_defaults
from slapp.utils.schema import ArgSchema, ArgSchemaParser, StrictInt



class ServeException(SlappError):
    """The server cannot serve what was asked."""


class ServeSchema(ArgSchema):
    labeling_job = argschema.fields.List(
        argschema.fields.Str(), required=True, validate=mm.validate.Length(min=1),
        metadata={"description": "names of the labeling jobs to serve (created by "
                                 "slapp.labeling.create_job); a labeler gets their ROIs "
                                 "in one queue"})
    port = StrictInt(
        required=True, validate=mm.validate.Range(min=0, max=65535),
        metadata={"description": "TCP port to listen on (0: any free port, printed)"})
    host = mm.fields.Str(
        dump_default="127.0.0.1", load_default="127.0.0.1",
        metadata={"description": "address to listen on. 127.0.0.1 keeps the server to this "
                                 "machine, for a reverse proxy with TLS in front or an SSH "
                                 "tunnel; 0.0.0.0 exposes plain HTTP to the network"})
    artifact_dir = mm.fields.Str(
        metadata={"description": "serve the ROI files from this directory instead of the "
                                 "ones recorded in roi_manifests: the artifacts step's "
                                 "output directory or one run's directory, moved with its "
                                 "layout kept"})
    session_hours = mm.fields.Float(
        dump_default=12.0, load_default=12.0, validate=mm.validate.Range(min=0.01),
        metadata={"description": "how long a sign-in lasts: 12 hours covers a working day "
                                 "without asking a labeler for their token again"})
    secure_cookie = mm.fields.Bool(
        dump_default=False, load_default=False,
        metadata={"description": "send the session cookie over HTTPS only; set it behind "
                                 "a TLS proxy (a plain-HTTP page could not sign in)"})


def artifact_roots(dbconn: DbConnection, job_ids: list[int]) -> list[str]:
    """The artifact directories recorded for the ROIs of these jobs, sorted."""
    return [row["artifact_dir"] for row in dbconn.query(
        "SELECT DISTINCT manifests.artifact_dir FROM roi_manifests AS manifests "
        "JOIN labeling_tasks AS tasks ON tasks.roi_id = manifests.roi_id "
        "WHERE tasks.labeling_job_id = ANY(%s::int[]) ORDER BY 1", (job_ids,))]


def server_config(dbconn: DbConnection, args: dict, credentials: dict) -> ServerConfig:
    """Check the jobs and artifact directory asked for and describe what to serve.

    Raises
    ------
    ServeException
        For an unknown job or an artifact directory that does not exist.
    """
    names = list(dict.fromkeys(args["labeling_job"]))
    with dbconn.transaction() as cursor:
        found = job_ids_by_name(cursor, names)
    missing = [name for name in names if name not in found]
    if missing:
        raise ServeException(f"no labeling job named {', '.join(map(repr, missing))}")
    job_ids = [found[name] for name in names]
    if args.get("artifact_dir"):
        root = Path(args["artifact_dir"]).resolve()
        if not root.is_dir():
            raise ServeException(f"artifact_dir {root} is not a directory")
        roots, override = [str(root)], True
    else:
        roots, override = artifact_roots(dbconn, job_ids), False
    return ServerConfig(credentials=credentials, job_ids=job_ids, job_names=names,
                        artifact_roots=roots, artifact_override=override,
                        session_hours=args["session_hours"],
                        secure_cookie=args["secure_cookie"])


def listening_socket(host: str, port: int) -> socket.socket:
    """Bind the server's socket now, so a taken port is one clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ServeException(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(1024)
    return sock


class ServeOutputSchema(mm.Schema):
    url = mm.fields.Str(required=True, metadata={"description": "where the page is, "
                                                               "written once listening"})
    labeling_jobs = mm.fields.List(mm.fields.Str(), required=True)


class Serve(ArgSchemaParser):
    """Serve labeling jobs over HTTP until interrupted."""

    default_schema = ServeSchema
    default_output_schema = ServeOutputSchema

    def run(self, dbconn: DbConnection, credentials: dict) -> None:
        """Check the inputs, bind, print the URL and serve."""
        config = server_config(dbconn, self.args, credentials)
        dbconn.close()
        if not config.artifact_roots:
            print("warning: no ROI manifests are recorded for these jobs; the page will show "
                  "the trace and masks only (run slapp.labeling.artifacts, or give "
                  "--artifact_dir)", file=sys.stderr)
        sock = listening_socket(self.args["host"], self.args["port"])
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}/"
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(
                {"url": url, "labeling_jobs": config.job_names}))
        print(f"serving labeling job(s) {', '.join(config.job_names)} at {url} "
              "(Ctrl-C stops)", flush=True)
        server = uvicorn.Server(uvicorn.Config(
            create_app(config), log_level="warning", access_log=False, proxy_headers=True,
            timeout_graceful_shutdown=5))
        server.run(sockets=[sock])


def main() -> None:  # pragma: no cover - thin CLI
    """Serve against the labeling database from the environment."""
    # space-separated job names are what the command promises; argschema warns about them
    warnings.filterwarnings("ignore", message=".*old-style command-line syntax",
                            category=FutureWarning)
    parser = Serve(logger_name="Serve")
    credentials = get_db_credentials(**label_defaults)
    with DbConnection(**credentials) as dbconn:
        parser.run(dbconn, credentials)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "serve"))
