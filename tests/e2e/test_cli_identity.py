"""`p2pinfer init`, `p2pinfer id` and `--version`, run the way a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from p2pinfer import __version__

REPO = Path(__file__).resolve().parents[2]


def p2pinfer(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("P2PINFER_HOME", None)
    if home is not None:
        env["P2PINFER_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "p2pinfer", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def assert_one_line_error(run: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert run.returncode == code, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ") and text in lines[0]
    assert "Traceback" not in run.stderr


def test_version() -> None:
    run = p2pinfer("--version")
    assert run.returncode == 0
    assert run.stdout.strip() == f"p2pinfer {__version__}"


def test_init_then_id_print_the_same_peer_id(tmp_path: Path) -> None:
    home = tmp_path / "node"
    init = p2pinfer("init", "--home", str(home))
    assert init.returncode == 0, init.stderr
    peer_id = init.stdout.strip().splitlines()[-1]
    assert peer_id.startswith("12D3KooW")
    assert (home / "node.key").stat().st_mode & 0o777 == 0o600
    shown = p2pinfer("id", "--home", str(home))
    assert shown.returncode == 0 and shown.stdout.strip() == peer_id
    from_env = p2pinfer("id", home=home)
    assert from_env.stdout.strip() == peer_id


def test_init_twice_refuses_to_overwrite(tmp_path: Path) -> None:
    assert p2pinfer("init", "--home", str(tmp_path)).returncode == 0
    assert_one_line_error(p2pinfer("init", "--home", str(tmp_path)), 3, "already exists")


def test_id_without_a_key_says_to_run_init(tmp_path: Path) -> None:
    assert_one_line_error(p2pinfer("id", "--home", str(tmp_path)), 3, "p2pinfer init")


def test_a_world_readable_key_is_refused(tmp_path: Path) -> None:
    assert p2pinfer("init", "--home", str(tmp_path)).returncode == 0
    (tmp_path / "node.key").chmod(0o644)
    assert_one_line_error(p2pinfer("id", "--home", str(tmp_path)), 3, "chmod 600")


def test_a_corrupt_key_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    key.write_text("p2pinfer-ed25519-seed-v1\nnot-hex\n")
    key.chmod(0o600)
    assert_one_line_error(p2pinfer("id", "--home", str(tmp_path)), 3, "malformed key")
