"""Guards shared by every test under tests/."""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _file_limit_unchanged() -> Iterator[None]:
    """A test (or a library it imports) that lowers RLIMIT_NOFILE breaks every later test that
    starts a container: podman asks runc for the configured nofile limit, which a lowered hard
    limit refuses ("error setting rlimit type 7"). Fail the test that did it, naming the limit,
    and put the limit back so the rest of the run is unaffected."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield
    after = resource.getrlimit(resource.RLIMIT_NOFILE)
    if after != before:
        with contextlib.suppress(ValueError, OSError):  # raising a hard limit needs CAP_SYS_RESOURCE
            resource.setrlimit(resource.RLIMIT_NOFILE, before)
        pytest.fail(f"RLIMIT_NOFILE changed from {before} to {after} in this test (an import that calls "
                    "resource.setrlimit? mlx_lm.utils does: import it inside slm_quantizer.mlx.keep_nofile_limit)")
