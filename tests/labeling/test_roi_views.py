"""Which manifest paths the server serves, and at which URL."""
from slapp.labeling.roi_views import artifact_url


def test_files_under_a_recorded_directory_get_its_index():
    roots = ["/data/art/run_1_ab", "/data/art/run_2_cd"]
    assert artifact_url("/data/art/run_2_cd/avg_7_12.png", "/data/art/run_2_cd/", roots,
                        False) == "/artifacts/1/avg_7_12.png"
    assert artifact_url("/data/art/run_1_ab/a b#1.png", "/data/art/run_1_ab", roots,
                        False) == "/artifacts/0/a%20b%231.png"


def test_files_elsewhere_are_not_served():
    roots = ["/data/art/run_1_ab"]
    for path in ("/etc/passwd", "/data/art/run_1_ab/../../secret.png",
                 "s3://bucket/run_1_ab/avg.png"):
        assert artifact_url(path, "/data/art/run_1_ab", roots, False) is None, path
    assert artifact_url("/data/other/avg.png", "/data/other", roots, False) is None


def test_an_override_is_the_moved_run_directory_or_its_holder(tmp_path):
    (tmp_path / "holder" / "run_1_ab").mkdir(parents=True)
    assert artifact_url("/old/run_1_ab/avg.png", "/old/run_1_ab", [str(tmp_path / "holder")],
                        True) == "/artifacts/0/run_1_ab/avg.png"
    assert artifact_url("/old/run_1_ab/avg.png", "/old/run_1_ab", [str(tmp_path)],
                        True) == "/artifacts/0/avg.png"
