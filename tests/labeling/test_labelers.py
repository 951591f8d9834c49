"""``python -m slapp.labeling.labelers``: tokens shown once and stored hashed; list; revoke."""
import json

from slapp.labeling.labelers import hash_secret


def test_add_prints_the_token_once_and_stores_its_hash(run_cli, labeling_db, tmp_path):
    output = tmp_path / "ann.json"
    result = run_cli("slapp.labeling.labelers", "--add", "ann", "--output_json", output)
    assert result.returncode == 0, result.stderr
    written = json.loads(output.read_text())
    assert set(written) == {"name", "token"} and written["name"] == "ann"
    assert result.stdout.splitlines()[-1] == written["token"]
    assert len(written["token"]) >= 40
    rows = labeling_db.query("SELECT name, token_hash, revoked_at FROM labelers")
    assert rows == [{"name": "ann", "token_hash": hash_secret(written["token"]),
                     "revoked_at": None}]

    listed = run_cli("slapp.labeling.labelers", "--list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["ann  active  0 labels"]
    assert written["token"] not in listed.stdout

    revoked = run_cli("slapp.labeling.labelers", "--revoke", "ann")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert labeling_db.query("SELECT revoked_at IS NOT NULL AS r FROM labelers") == [{"r": True}]


def test_mistakes_are_one_line(run_cli, labeling_db):
    assert run_cli("slapp.labeling.labelers", "--add", "ann").returncode == 0
    for args, message in [
        (("--add", "ann"), "there is already a labeler named 'ann'"),
        (("--revoke", "zed"), "there is no labeler named 'zed'"),
        (("--add", "bo", "--list"), "invalid input: give one of --add NAME, --list, "
                                    "--revoke NAME"),
    ]:
        result = run_cli("slapp.labeling.labelers", *args)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [f"slapp labelers: error: {message}"], args
    assert labeling_db.query("SELECT count(*) AS n FROM labelers")[0]["n"] == 1
