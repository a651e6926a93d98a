"""Replica logs: where the current run starts (across rotation), tails from there, and
why an exec failed."""

from __future__ import annotations

import os

from procorch.supervisor.logs import RotatingLog, tail_lines
from procorch.supervisor.process import exec_failure


def test_run_start_follows_runs_and_rotation(tmp_path):
    path = tmp_path / "a.0.log"
    log = RotatingLog(path, max_bytes=1024, backups=1)
    log.write(b"first run\n")
    log.mark_run()
    assert log.run_start == os.path.getsize(path)  # the line and the time stamped on it
    log.write(b"second run\n")
    assert tail_lines(path, 10, start=log.run_start) == ["second run"]
    assert tail_lines(path, 10) == ["first run", "second run"]
    log.write(b"x" * 990 + b"\n")  # over max_bytes: rotated, the new file is all this run's
    assert log.run_start == 0
    assert (tmp_path / "a.0.log.1").exists()
    log.close()
    reopened = RotatingLog(path, max_bytes=1024, backups=1)  # a new daemon: runs start at the end
    assert reopened.run_start == os.path.getsize(path)
    reopened.close()


def test_a_new_run_starts_on_a_line_of_its_own(tmp_path):
    path = tmp_path / "a.0.log"
    log = RotatingLog(path, max_bytes=1024, backups=1)
    log.write(b"died mid-")  # the process ended in the middle of a line
    log.mark_run()
    log.write(b"fresh\n")
    assert tail_lines(path, 10, start=log.run_start) == ["fresh"]
    assert tail_lines(path, 10) == ["died mid-", "fresh"]
    log.close()


def test_tail_from_an_offset_past_the_end_reads_the_whole_rotated_file(tmp_path):
    path = tmp_path / "a.0.log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(3000)))
    assert tail_lines(path, 2, start=10_000) == ["line 2998", "line 2999"]
    short = tmp_path / "short.log"
    short.write_bytes(b"new\n")  # rotated after the offset was taken: all of it is newer
    assert tail_lines(short, 5, start=500) == ["new"]
    # a start inside a long file reads no further back than it
    start = len(b"".join(b"line %d\n" % i for i in range(2990)))
    assert tail_lines(path, 50, start=start) == [f"line {i}" for i in range(2990, 3000)]


def test_exec_failure_reads_setpriv_only_for_its_exit_codes():
    said = b"setpriv: failed to execute ./x.sh: No such file or directory\nmore\n"
    exited = {code: code << 8 for code in (1, 126, 127)}  # wait statuses of exit(code)
    assert exec_failure("./x.sh", exited[127], said) == (
        "cannot execute ./x.sh: No such file or directory"
    )
    assert exec_failure("./x.sh", exited[126], b"setpriv: fehlgeschlagen\n") == (
        "cannot execute ./x.sh: setpriv: fehlgeschlagen"  # another language: shown whole
    )
    assert exec_failure("./x.sh", exited[127], b"") == "cannot execute ./x.sh: exit status 127"
    assert exec_failure("./x.sh", exited[1], said) is None
    assert exec_failure("./x.sh", 9, said) is None  # killed by SIGKILL
