"""ssdlib.utils: files are written atomically (the old file stays whole when a write fails, and
a killed writer's temp is cleaned up) with the permissions the umask gives."""

from __future__ import annotations

import pytest


def test_saved_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    import os

    from ssdlib.utils import atomic_save

    old = os.umask(0o022)
    try:
        path = atomic_save({"x": 1}, tmp_path / "a.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    from ssdlib.utils import atomic_write

    path = atomic_write(tmp_path / "a.bin", lambda f: f.write(b"old"))

    def half_then(error):
        def write(f):
            f.write(b"half of the new")
            raise error

        return write

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, half_then(OSError(28, "No space left on device")))
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the middle of a write
        atomic_write(path, half_then(KeyboardInterrupt()))
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_an_orphaned_temp_is_removed_by_the_next_write_to_its_file(tmp_path):
    """``kill -9`` between creating the temp and renaming it leaves the temp behind: the next
    write to that path removes it once it is old, and leaves alone what may still be in use."""
    import os
    import time

    from ssdlib.utils import STALE_TEMP_SECONDS, atomic_save

    two_hours_ago = time.time() - 2 * 3600
    assert STALE_TEMP_SECONDS < 2 * 3600
    names = {
        "orphan": ".a.pt.k3j_x9q2.tmp",  # a killed writer's, two hours old
        "fresh": ".a.pt.w7m2p0zz.tmp",  # a concurrent writer's, being written now
        "other": ".b.pt.k3j_x9q2.tmp",  # another file's orphan
        "longer": ".a.pt.bak.k3j_x9q2.tmp",  # the orphan of "a.pt.bak", not of "a.pt"
    }
    for role, name in names.items():
        (tmp_path / name).write_bytes(b"partial")
        if role != "fresh":
            os.utime(tmp_path / name, (two_hours_ago, two_hours_ago))
    atomic_save({"x": 1}, tmp_path / "a.pt")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["a.pt", names["fresh"], names["other"], names["longer"]])
