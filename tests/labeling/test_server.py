"""The labeling server over real HTTP: sign-in, sessions, the API, files with byte ranges."""
import json
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from labeling_server import RunningServer, sign_in
from slapp.labeling.labelers import hash_secret

API_ROUTES = [("GET", "/api/next"), ("GET", "/api/progress"), ("GET", "/api/labels/mine"),
              ("POST", "/api/labels"), ("GET", "/api/tasks/1"), ("GET", "/api/tasks/1/trace"),
              ("GET", "/api/tasks/1/masks"), ("GET", "/api/tasks/1/correlation.png")]


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of listening TCP sockets on ``port`` (from /proc/net/tcp*)."""
    addresses = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                addresses.add(address if width == 32 else ".".join(
                    str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return addresses


def test_listens_on_127_0_0_1_only(server):
    assert _listening_addresses(server.port) == {"127.0.0.1"}


def test_output_json_says_where_it_listens(cli_env, job, tmp_path):
    output = tmp_path / "serve.json"
    running = RunningServer(cli_env, "--labeling_job", "test-job", "--port", "0",
                            "--output_json", str(output))
    try:
        assert json.loads(output.read_text()) == {"url": running.url + "/",
                                                  "labeling_jobs": ["test-job"]}
    finally:
        running.stop()


def test_without_a_session_every_api_route_is_401_and_nothing_is_stored(
        server, labeling_db, job):
    for method, path in API_ROUTES:
        response = httpx.request(method, server.url + path, json={
            "labeling_task_id": job["task_ids"][0], "label": "cell"})
        assert response.status_code == 401, path
        assert response.json() == {"error": "not signed in"}
    forged = httpx.get(server.url + "/api/next", cookies={"slapp_session": "guess"})
    assert forged.status_code == 401
    files = httpx.get(server.url + f"/artifacts/0/{job['roi_ids'][0]}/{job['roi_ids'][0]}_avg.png")
    assert files.status_code == 401
    assert labeling_db.query("SELECT count(*) AS n FROM roi_labels")[0]["n"] == 0


def test_the_sign_in_form_and_a_bad_token(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200
    assert '<label for="token">Token</label>' in page.text
    assert ">Sign in</button>" in page.text
    refused = httpx.post(server.url + "/signin", data={"token": "not-a-token"})
    assert refused.status_code == 401 and "slapp_session" not in refused.cookies


def test_a_session_cookie_is_http_only_strict_and_stored_hashed(server, tokens, labeling_db):
    response = httpx.post(server.url + "/signin", data={"token": tokens["ann"]})
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    session = response.cookies["slapp_session"]
    stored = labeling_db.query("SELECT session_hash FROM labeler_sessions")
    assert stored == [{"session_hash": hash_secret(session)}]
    assert tokens["ann"] not in json.dumps(labeling_db.query("SELECT * FROM labelers"),
                                           default=str)


def test_next_submit_replay_and_progress(client_for, tokens, job, labeling_db):
    ann = client_for(tokens["ann"])
    body = ann.get("/api/next").json()
    task = body["task"]
    assert body["labeler"] == "ann" and body["jobs"] == ["test-job"]
    assert task["labeling_task_id"] == job["task_ids"][0]
    assert task["quota"] == 2 and task["crop"]["size"] == 128
    assert task["urls"]["clip"].endswith("/clip.webm")
    assert task["urls"]["correlation"] == f"/api/tasks/{task['labeling_task_id']}/correlation.png"
    trace = ann.get(f"/api/tasks/{task['labeling_task_id']}/trace").json()
    assert trace["fs"] == 31.0 and len(trace["trace"]) == 600
    masks = ann.get(f"/api/tasks/{task['labeling_task_id']}/masks").json()
    assert len(masks["roi"]) == 49 and [64, 64] in masks["roi"]
    png = ann.get(task["urls"]["correlation"])
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"

    label = {"labeling_task_id": task["labeling_task_id"], "label": "not cell",
             "note": "<b>dim</b>", "seconds_shown": 3.5, "request_id": "req-1",
             "view_settings": {"background": "max", "brightness": 1.2}}
    first = ann.post("/api/labels", json=label)
    assert first.status_code == 201
    again = ann.post("/api/labels", json=label)
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.json()["id"] == first.json()["id"]
    rows = labeling_db.query("SELECT label, note, seconds_shown, view_settings, source, "
                             "request_id FROM roi_labels")
    assert rows == [{"label": "not cell", "note": "<b>dim</b>", "seconds_shown": 3.5,
                     "view_settings": {"background": "max", "brightness": 1.2},
                     "source": "page", "request_id": "req-1"}]
    progress = ann.get("/api/progress").json()
    assert progress == {"n_labelled_by_me": 1, "n_open_for_me": 3, "n_tasks": 4}
    mine = ann.get("/api/labels/mine").json()["labels"]
    assert [(entry["roi_id"], entry["note"]) for entry in mine] == [
        (job["roi_ids"][0], "<b>dim</b>")]
    assert ann.post("/api/labels", json={"labeling_task_id": "x"}).status_code == 400
    assert ann.post("/api/labels", json={**label, "label": "maybe",
                                         "request_id": None}).status_code == 400


def test_a_task_offered_to_one_labeler_is_counted_for_the_others(client_for, tokens, job):
    ann, ben, cy = (client_for(tokens[name]) for name in ("ann", "ben", "cy"))
    offered = [client.get("/api/next").json()["task"]["labeling_task_id"]
               for client in (ann, ben, cy)]
    # two labels wanted: the first task goes to two labelers, the third gets the next one
    assert offered == [job["task_ids"][0], job["task_ids"][0], job["task_ids"][1]]
    for client, task_id in zip((ann, ben), offered):
        assert client.post("/api/labels", json={"labeling_task_id": task_id,
                                                "label": "cell"}).status_code == 201
    refused = cy.post("/api/labels", json={"labeling_task_id": offered[0], "label": "cell"})
    assert refused.status_code == 409 and refused.json()["reason"] == "quota_reached"


def test_a_revoked_labeler_is_refused_also_in_an_open_session(client_for, tokens, run_cli,
                                                             server):
    ann = client_for(tokens["ann"])
    assert ann.get("/api/next").status_code == 200
    result = run_cli("slapp.labeling.labelers", "--revoke", "ann")
    assert result.returncode == 0, result.stderr
    assert ann.get("/api/next").status_code == 401
    again = httpx.post(server.url + "/signin", data={"token": tokens["ann"]})
    assert again.status_code == 401


def test_files_are_served_with_byte_ranges_and_only_from_the_artifact_dir(
        client_for, tokens, job, tmp_path):
    ann = client_for(tokens["ann"])
    clip = ann.get("/api/next").json()["task"]["urls"]["clip"]
    size = (job["artifact_dir"] / "clip.webm").stat().st_size
    whole = ann.get(clip)
    assert whole.status_code == 200 and len(whole.content) == size
    part = ann.get(clip, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{size}"
    (tmp_path / "secret.txt").write_text("secret")
    for path in ("/artifacts/0/%2e%2e/secret.txt", "/artifacts/0/..%2fsecret.txt",
                 "/artifacts/1/clip.webm", "/artifacts/0/nothing.png"):
        response = ann.get(path)
        assert response.status_code == 404 and "secret" not in response.text, path


@pytest.mark.parametrize("holder", [False, True])
def test_the_artifact_dir_can_be_overridden(cli_env, job, tokens, tmp_path, holder):
    # the recorded directory itself moved, or the directory holding it (artifacts'
    # --output_dir, which holds one directory per run)
    moved = tmp_path / "moved"
    target = moved / job["artifact_dir"].name if holder else moved
    target.parent.mkdir(parents=True, exist_ok=True)
    job["artifact_dir"].rename(target)
    running = RunningServer(cli_env, "--labeling_job", "test-job", "--port", "0",
                            "--artifact_dir", str(moved))
    try:
        with closing(sign_in(running.url, tokens["ben"])) as ben:
            urls = ben.get("/api/next").json()["task"]["urls"]
            assert ben.get(urls["avg"]).content[:4] == b"\x89PNG"
    finally:
        running.stop()


def test_labels_survive_a_restart(server, tokens, job, labeling_db):
    with closing(sign_in(server.url, tokens["ann"])) as ann:
        task_id = ann.get("/api/next").json()["task"]["labeling_task_id"]
        assert ann.post("/api/labels", json={"labeling_task_id": task_id, "label": "cell",
                                             "request_id": "keep"}).status_code == 201
    server.stop()
    server.start()
    with closing(sign_in(server.url, tokens["ann"])) as ann:
        assert ann.get("/api/progress").json()["n_labelled_by_me"] == 1
        replay = ann.post("/api/labels", json={"labeling_task_id": task_id, "label": "cell",
                                               "request_id": "keep"})
        assert replay.status_code == 200
    assert labeling_db.query("SELECT count(*) AS n FROM roi_labels")[0]["n"] == 1


@pytest.mark.parametrize("args, message", [
    (("--labeling_job", "nope", "--port", "0"), "no labeling job named 'nope'"),
    (("--labeling_job", "test-job", "--port", "0", "--artifact_dir", "/no/such/dir"),
     "artifact_dir /no/such/dir is not a directory"),
])
def test_bad_input_is_one_line(run_cli, job, args, message):
    result = run_cli("slapp.labeling.serve", *args, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"slapp serve: error: {message}"]
