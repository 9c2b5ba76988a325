"""One build per site at a time, across processes; waiters can say who holds the lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from render.errors import LockedError
from render.run.locks import daemon_lock, lock_path, running, site_lock

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))

from schedkit import wait_for  # noqa: E402


def spawn_holder(state: Path, site: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """Another process that holds the site lock until it is killed."""
    ready = tmp_path / f"ready-{os.getpid()}-{len(list(tmp_path.iterdir()))}"
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "schedkit.py"), "hold", str(state), site, str(ready)],
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )
    wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=20, what="the holder")
    assert proc.poll() is None, "the holder exited"
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(timeout=10)


def test_no_wait_names_the_holder(tmp_path: Path) -> None:
    holder = spawn_holder(tmp_path, "acme/blog", tmp_path)
    try:
        with pytest.raises(LockedError) as caught, site_lock(tmp_path, "acme/blog", wait=False):
            pass
        err = caught.value
        assert err.site == "acme/blog"
        assert err.headline().startswith(
            f"acme/blog: lock: a build is running: pid {holder.pid} on "
        )
        assert "(force, since " in err.headline()
        assert err.hint == (
            "run again without --no-wait to wait for it; 'render status' shows running builds"
        )
        info = running(tmp_path, "acme/blog")
        assert info is not None and info.pid == holder.pid and info.reason == "force"
        assert running(tmp_path, "acme/other") is None
    finally:
        stop(holder)


def test_wait_says_who_it_waits_for_then_gets_the_lock(tmp_path: Path) -> None:
    holder = spawn_holder(tmp_path, "acme/blog", tmp_path)
    messages: list[str] = []

    def on_wait(message: str) -> None:
        messages.append(message)
        holder.terminate()  # the running build ends while we wait

    try:
        with site_lock(tmp_path, "acme/blog", wait=True, on_wait=on_wait, reason="schedule") as me:
            assert me.pid == os.getpid()
            assert running(tmp_path, "acme/blog") == me
    finally:
        stop(holder)
    assert len(messages) == 1
    assert messages[0].startswith(
        f"acme/blog: waiting for the running build to finish: pid {holder.pid} on "
    )
    assert running(tmp_path, "acme/blog") is None
    assert lock_path(tmp_path, "acme/blog").read_text() == ""  # no holder left behind


def test_a_killed_holder_frees_the_site(tmp_path: Path) -> None:
    holder = spawn_holder(tmp_path, "acme/blog", tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    # the file still names the dead holder; the kernel released its flock
    assert json.loads(lock_path(tmp_path, "acme/blog").read_text())["pid"] == holder.pid
    assert running(tmp_path, "acme/blog") is None
    with site_lock(tmp_path, "acme/blog", wait=False):
        pass


CHILDREN = textwrap.dedent(
    """
    import multiprocessing, os, subprocess, sys, time
    from pathlib import Path
    from render.run.locks import site_lock

    def sleeper(started):
        started.set()  # after the fork handlers ran: the child is as it will stay
        time.sleep(60)

    state, out = Path(sys.argv[1]), Path(sys.argv[2])
    fork = multiprocessing.get_context("fork")
    with site_lock(state, "acme/blog", wait=False, reason="schedule"):
        execd = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        started = fork.Event()
        forked = fork.Process(target=sleeper, args=(started,), daemon=False)
        forked.start()
        assert started.wait(30), "the forked child did not start"
        out.write_text(f"{execd.pid} {forked.pid}")
        os._exit(0)  # the parent dies holding the lock; its children live on
    """
)


def test_children_do_not_inherit_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "children"
    proc = subprocess.run([sys.executable, "-c", CHILDREN, str(tmp_path), str(out)], timeout=60)
    assert proc.returncode == 0
    pids = [int(p) for p in out.read_text().split()]
    try:
        for pid in pids:
            os.kill(pid, 0)  # both children are still alive
        with site_lock(tmp_path, "acme/blog", wait=False):  # yet the site is free
            pass
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)


CRITICAL = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from render.run.locks import site_lock

    state, log, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    for _ in range(rounds):
        with site_lock(state, "acme/blog", wait=True, reason=str(os.getpid())):
            enter = time.time()
            time.sleep(0.02)
            line = json.dumps({"pid": os.getpid(), "enter": enter, "exit": time.time()})
            with open(log, "a") as fh:
                fh.write(line + "\\n")
    """
)


def test_two_processes_never_overlap(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    procs = [
        subprocess.Popen([sys.executable, "-c", CRITICAL, str(tmp_path), str(log), "15"])
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    entries = sorted(
        (json.loads(line) for line in log.read_text().splitlines()), key=lambda e: e["enter"]
    )
    assert len(entries) == 30
    assert len({e["pid"] for e in entries}) == 2
    for before, after in zip(entries, entries[1:], strict=False):
        assert before["exit"] <= after["enter"], (before, after)


def test_one_daemon_per_state_folder(tmp_path: Path) -> None:
    with daemon_lock(tmp_path), pytest.raises(LockedError) as caught, daemon_lock(tmp_path):
        pass
    assert caught.value.headline().startswith(
        f"lock: a scheduler is already running: pid {os.getpid()} on "
    )


def test_fork_without_exec_does_not_keep_the_lock(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    with site_lock(tmp_path, "acme/blog", wait=False):
        child = ctx.Process(target=_sleep, args=(30,))
        child.start()
    try:
        assert child.is_alive()
        with site_lock(tmp_path, "acme/blog", wait=False):
            pass
    finally:
        child.kill()
        child.join(10)


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)
