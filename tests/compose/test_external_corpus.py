"""The external Compose corpus (shared/compose-corpus: 190 files from 22 public
repositories, run 212 ways) loads exactly as its expect.tsv says Docker loads it.

The corpus lives beside the repository (../shared/compose-corpus, as in CI, which puts
a copy of shared/ beside its clone). run.sh runs `stack config` once per row; it is
given this checkout's swarmlet, whatever else is installed.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS = REPO_ROOT.parent / "shared" / "compose-corpus"


def _rows(expect: Path) -> int:
    return sum(1 for line in expect.read_text().splitlines() if line.strip() and not line.startswith("#"))


@pytest.mark.timeout(1200)
def test_every_corpus_row_loads_or_is_refused_as_docker_does(tmp_path, in_ci):
    run_sh = CORPUS / "run.sh"
    if not run_sh.is_file():
        reason = f"no Compose corpus at {CORPUS} (a copy of shared/compose-corpus beside the repository)"
        if in_ci:
            pytest.fail(f"CI is set but there is {reason}", pytrace=False)
        pytest.skip(reason)
    swarmlet = tmp_path / "swarmlet"
    swarmlet.write_text(f'#!/bin/sh\nexec env PYTHONPATH="{REPO_ROOT}" "{sys.executable}" -m swarmlet.cli.main "$@"\n')
    swarmlet.chmod(0o755)
    environment = {k: v for k, v in os.environ.items() if k not in ("EXPECT", "VERBOSE")}  # the corpus's own rows
    result = subprocess.run(["bash", str(run_sh), str(swarmlet)], capture_output=True, text=True, timeout=1100,
                            env=environment)
    rows = _rows(CORPUS / "expect.tsv")
    lines = result.stdout.strip().splitlines()
    assert lines and lines[-1] == f"external_compose_ok: {rows}/{rows}", "\n".join(lines[-40:]) + result.stderr
