"""Movies shared by the segmentation tests that run many real Suite2P tasks."""
import dataclasses

import pytest

from slapp.demo.synthetic_movie import MovieSpec, write_movie

# Small enough that Suite2P takes seconds, big enough that it finds cells.
TINY_MOVIE = MovieSpec(nframes=600, height=64, width=64, ncells=6)


@pytest.fixture(scope="session")
def tiny_movies(tmp_path_factory):
    """Four tiny synthetic movies (seeds 0-3), written once per test session."""
    directory = tmp_path_factory.mktemp("tiny_movies")
    paths = []
    for seed in range(4):
        path = directory / f"movie_{seed}.h5"
        write_movie(path, dataclasses.replace(TINY_MOVIE, seed=seed))
        paths.append(path)
    return paths
