"""Atomic outputs (pipeline.io): leftovers of writers on other machines or of older code are removed only
once stale; a rename or a temporary folder that fails is one line naming the output."""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from pipeline import io
from pipeline.errors import PipelineError


def test_leftovers_without_this_host_s_name_are_removed_once_stale(tmp_path):
    final = tmp_path / "metrics.json"
    old_file = tmp_path / ".metrics.json.legacy.tmp"          # the code before names carried a process
    other_host = tmp_path / ".metrics.json.otherhost-123.abc.tmp"
    fresh = tmp_path / ".metrics.json.otherhost-456.def.tmp"
    for p in (old_file, other_host, fresh):
        p.write_text("x")
    long_ago = time.time() - io.STALE_AFTER_S - 60
    for p in (old_file, other_host):
        os.utime(p, (long_ago, long_ago))
    assert sorted(io.clean_stale(final)) == sorted([old_file, other_host])
    assert fresh.exists() and not old_file.exists() and not other_host.exists()
    assert io.clean_stale(tmp_path / "no-such-folder" / "x.json") == []


def test_a_live_writer_of_another_user_is_not_stale(monkeypatch):
    def kill(pid, sig):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(io.os, "kill", kill)
    assert io._alive(12345) is True


def test_a_temporary_folder_that_cannot_be_made_names_the_output(tmp_path, monkeypatch):
    def mkdtemp(**kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs["dir"])

    monkeypatch.setattr(io.tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(PipelineError) as exc:
        io.write_text(tmp_path / "out" / "a.txt", "x")
    assert str(exc.value) == f"{tmp_path / 'out' / 'a.txt'}: cannot write this output (Read-only file system: " \
                             f"{tmp_path / 'out'})"


def test_a_folder_cannot_replace_a_file_and_a_file_cannot_replace_a_folder(tmp_path):
    final = tmp_path / "report"
    final.write_text("a file where the folder goes")
    with pytest.raises(PipelineError) as exc:
        with io.atomic_path(final) as tmp:
            tmp.mkdir()
    assert exc.value.where == str(final) and exc.value.what.startswith("cannot write this output (")
    assert final.read_text() == "a file where the folder goes"
    assert not list(tmp_path.glob(".report.*.tmp"))

    staged, dest = tmp_path / "staged", tmp_path / "dest"
    (staged / "tables").mkdir(parents=True)
    (staged / "tables" / "t1.md").write_text("t1")
    (dest / "tables" / "t1.md").mkdir(parents=True)  # a folder where a file goes
    with pytest.raises(PipelineError) as exc:
        io.publish(staged, dest)
    assert exc.value.where == str(dest / "tables" / "t1.md")
