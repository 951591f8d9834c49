"""The embedded server: start, status, env, stop, and data kept across restarts."""
import os
import shlex
import stat

from slapp import embedded
from slapp.utils.query_utils import DbConnection


def test_env_points_the_clis_at_the_server(embedded_server, run_cli):
    result = run_cli("slapp.embedded", "env", "--home", embedded_server.home)
    assert result.returncode == 0, result.stderr
    exported = dict(shlex.split(line)[1].split("=", 1) for line in result.stdout.splitlines())
    assert exported["LIMS_DATABASE"] == "lims" and exported["LABELING_DATABASE"] == "labeling"
    assert exported["LABELING_PORT"] == str(embedded_server.port)
    with DbConnection(user=exported["LABELING_USER"], password=exported["LABELING_PASSWORD"],
                      host=exported["LABELING_HOST"], database=exported["LABELING_DATABASE"],
                      port=int(exported["LABELING_PORT"])) as dbconn:
        assert dbconn.query("SELECT current_user AS who") == [{"who": "labeling"}]


def test_status_reports_running(embedded_server, run_cli):
    result = run_cli("slapp.embedded", "status", "--home", embedded_server.home)
    assert result.returncode == 0
    assert result.stdout.startswith(f"running: port {embedded_server.port}")


def test_passwords_file_is_private(embedded_server):
    assert stat.S_IMODE(embedded_server.config_path.stat().st_mode) == 0o600


def test_lims_reader_cannot_write(embedded_server):
    """The role itself may only read, even through a connection that would let it try."""
    import psycopg2
    import pytest
    writer = DbConnection(**embedded_server.credentials(embedded.LIMS_ROLE,
                                                        embedded.LIMS_DATABASE))
    with pytest.raises(psycopg2.Error, match="permission denied"):
        writer.execute("CREATE TABLE intruder (id int)")
    writer.close()


def test_secret_files_are_private_from_their_first_byte(tmp_path):
    import pytest
    previous = os.umask(0)  # the most permissive umask a user could have
    try:
        path = tmp_path / "secret"
        embedded.create_private_file(path, "s3cret")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == "s3cret"
        with pytest.raises(FileExistsError):  # never reuses a file someone else made
            embedded.create_private_file(path, "other")
    finally:
        os.umask(previous)


def test_initdb_password_file_is_gone_after_start(embedded_server):
    assert not (embedded_server.log_path.parent / ".initdb-password").exists()


def test_data_survives_a_restart(server_home_factory):
    server = embedded.EmbeddedServer(server_home_factory())
    server.start()
    try:
        with DbConnection(**server.credentials("labeling", "labeling")) as dbconn:
            dbconn.execute("CREATE TABLE kept (note text)")
            dbconn.execute("INSERT INTO kept VALUES (%s)", ("still here",))
        server.stop()
        assert not server.is_running()
        server.start()
        with DbConnection(**server.credentials("labeling", "labeling")) as dbconn:
            assert dbconn.query("SELECT note FROM kept") == [{"note": "still here"}]
    finally:
        server.stop()


def test_env_before_start_is_a_clear_error(tmp_path, run_cli):
    result = run_cli("slapp.embedded", "env", "--home", tmp_path / "nothing")
    assert result.returncode == 1
    assert "run `python -m slapp.embedded start`" in result.stderr
