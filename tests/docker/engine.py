"""The private Docker engine (testbed/docker_engine.py) as the tests want it."""

from __future__ import annotations

import contextlib

from testbed.docker_engine import DockerEngine, EngineUnavailable
from tests.conftest import require


@contextlib.contextmanager
def running_engine(extra_args: tuple[str, ...] = (), base_dir: str | None = None):
    """A started private engine with the test image, removed (containers, data, mounts)
    on the way out.  An engine that cannot start fails the test on CI, skips it elsewhere.
    `extra_args`: more dockerd arguments."""
    engine = DockerEngine(base_dir, extra_args=extra_args)
    try:
        try:
            engine.start()
            engine.build_image()
        except EngineUnavailable as exc:
            require(False, f"cannot start a private Docker engine: {exc}")
        yield engine
    finally:
        engine.cleanup()
