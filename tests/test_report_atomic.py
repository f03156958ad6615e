"""Issue 14: report files are replaced atomically; a failed write leaves the previous file.

The main test makes a real write fail part-way, whatever the implementation: in a subprocess,
``RLIMIT_FSIZE`` is lowered (after rendering) below the size of the new report.html, so the
kernel refuses the write past that many bytes (EFBIG), as a full disk would (ENOSPC).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _report_synth import make_manifest, make_table, make_trials

from afperturb.report import _write
from afperturb.report._write import write_atomic, write_report

_FAIL_PART_WAY = """
import resource, signal, sys
import afperturb.report._write as w
from _report_synth import make_manifest, make_table, make_trials

render = w.render_html

def render_then_limit(*args, **kwargs):
    page = render(*args, **kwargs)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write raises instead of killing
    limit = len(page.encode()) // 2
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    print(limit, flush=True)
    return page

w.render_html = render_then_limit
try:
    w.write_report(make_trials(seed=1), make_table(), make_manifest(), sys.argv[1],
                   max_requests=5, title="second report")
except OSError as exc:
    print("failed", exc.errno, flush=True)
"""


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_write_failing_part_way_leaves_the_previous_report(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    write_report(make_trials(), make_table(), make_manifest(), out, max_requests=5)
    before = _snapshot(out)
    assert set(before) == {"report.md", "report.html"}
    tests = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, str(Path(tests).parent)])}
    done = subprocess.run(
        [sys.executable, "-c", _FAIL_PART_WAY, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    limit, outcome = done.stdout.split("\n", 1)
    assert outcome.split() == ["failed", str(errno.EFBIG)]  # the new page did not fit
    assert int(limit) < len(before["report.html"])  # so a plain write would have truncated
    after = _snapshot(out)
    assert after["report.md"] != before["report.md"]  # the markdown fitted: html failed
    assert after["report.html"] == before["report.html"]  # the previous report, whole
    assert set(after) == set(before)  # and no temporary file left behind


def test_write_atomic_failing_mid_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.html"
    target.write_text("old report", encoding="utf-8")

    class FullDisk:
        def __init__(self, fd: int, *args: object, **kwargs: object) -> None:
            self.fd = fd

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            os.close(self.fd)

        def write(self, data: bytes) -> int:
            os.write(self.fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_write, "open", FullDisk, raising=False)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, "new report " * 1000)
    assert target.read_text(encoding="utf-8") == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_write_atomic_replaces_and_keeps_the_file_mode(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    write_atomic(target, "één\n")
    assert target.read_text(encoding="utf-8") == "één\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain write would create it
    target.chmod(0o640)
    write_atomic(target, "second\n")
    assert target.read_text(encoding="utf-8") == "second\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_a_failed_figure_write_leaves_the_previous_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """report.md links the PNGs: a full disk must not leave it pointing at a broken image."""
    pytest.importorskip("matplotlib")
    from afperturb.report import figures

    figures.write_figures(make_trials(), make_table(), tmp_path, dpi=40)
    before = _snapshot(tmp_path)
    assert "forest.png" in before

    def full_disk(path: Path, data: str | bytes) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(bytes(data[:10]) if isinstance(data, bytes) else b"")
        tmp.unlink()  # what write_atomic does on ENOSPC: the partial copy goes
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_write, "write_atomic", full_disk)
    with pytest.raises(OSError, match="No space left"):
        figures.write_figures(make_trials(seed=1), make_table(), tmp_path, dpi=40)
    assert _snapshot(tmp_path) == before  # was: savefig over the old PNG in place
