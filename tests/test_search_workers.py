"""Two real worker processes on one study in a real PostgreSQL server, as on two machines:
workers beating at different rates judge each other's trials by the trial's own heartbeat,
and a worker paused past its heartbeat finds its trial failed by the other and goes on."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import optuna
import pytest
from test_search import check_no_trial_ran_twice, env, search_command, write_space

from mnistlab.runs import rundir


def find_server_program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server of its own on a free loopback port, for the session."""
    initdb, pg_ctl = find_server_program("initdb"), find_server_program("pg_ctl")
    missing = None if initdb and pg_ctl else "PostgreSQL's initdb and pg_ctl"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing = "psycopg (pip install 'mnistlab[postgres]')"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"needs {missing}")
        pytest.skip(f"needs {missing}")
    folder = Path(tempfile.mkdtemp(prefix="mnistlab-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the server runs as postgres
        shutil.chown(folder, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    subprocess.run(
        [*as_owner, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder}"
    subprocess.run(
        [
            *as_owner,
            pg_ctl,
            "-D",
            str(data),
            "-o",
            options + " -c fsync=off",
            "-l",
            str(folder / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_owner, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


class Worker:
    """`mnistlab search run` in a process of its own, its output lines read as they come."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(
            command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.err = ""
        self.readers = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read_out(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _read_err(self) -> None:
        self.err = self.proc.stderr.read()

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None or self.readers[0].is_alive(), self.report()
            assert time.monotonic() < deadline, f"no {text!r}: {self.report()}"
            time.sleep(0.05)

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=10)
        return code

    def report(self) -> str:
        return "\n".join(self.lines) + "\n" + self.err

    def stop(self) -> None:
        """Whatever the test left it in (paused too), end it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


def wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def wait_for_first_epoch(run: Path, worker: Worker) -> None:
    """Until the trial's first epoch is on disk: it is training."""
    wait_until(lambda: (run / rundir.METRICS).exists(), f"{run}: {worker.report()}")


def test_a_worker_judges_a_slower_heartbeat_by_the_trial_own(data_dir, tmp_path, postgres_url):
    """Worker A beats every 30 s, worker B every second. B, waiting on A's trial, must not
    take 3 of its own beats of silence for a dead worker: the trial records its heartbeat,
    and B fails it only after 3 of A's."""
    space, runs = write_space(tmp_path, epochs=3), tmp_path / "runs"
    study = f"space-{os.getpid()}-{time.monotonic_ns()}"  # the server outlives each test
    storage = postgres_url
    common = ["--storage", storage, "--study", study, "--trials", "1"]
    a = Worker(search_command(space, runs, data_dir, *common, "--heartbeat", "30"))
    b = None
    try:
        a.wait_for_line("worker 0 (")  # it asks for its trial next, long before B can
        b = Worker(search_command(space, runs, data_dir, *common, "--heartbeat", "1"))
        wait_for_first_epoch(runs / study / "trial-0", a)
        # Hold A's trial open past B's grace: A's next beat is 30 s away in any case.
        a.proc.send_signal(signal.SIGSTOP)
        paused = time.monotonic()
        b.wait_for_line("waiting for 1 running trial of other workers")
        # B looks every second; by now it has looked with A silent for more than 3 s.
        time.sleep(max(0.0, paused + 4 - time.monotonic()) + 1.5)
        (trial,) = optuna.load_study(study_name=study, storage=storage).get_trials()
        assert trial.state.name == "RUNNING", b.report()
        assert trial.user_attrs["heartbeat"] == 30
        a.proc.send_signal(signal.SIGCONT)
        assert a.finish() == 0, a.report()
        assert b.finish() == 0, b.report()
    finally:
        for worker in (a, b):
            if worker is not None:
                worker.stop()
    for worker in (a, b):
        assert "Traceback" not in worker.err and "lost" not in worker.report(), worker.report()
    record = optuna.load_study(study_name=study, storage=storage)
    trials = record.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"]
    check_no_trial_ran_twice(trials, runs / study)
    # Both workers recorded their own sampler seed, from host and process.
    seeds = {k: v for k, v in record.user_attrs.items() if k.startswith("worker ")}
    assert len(seeds) == 2 and len({v["seed"] for v in seeds.values()}) == 2
    assert sorted(v["heartbeat"] for v in seeds.values()) == [1, 30]


def test_a_paused_worker_finds_its_trial_failed_and_goes_on(data_dir, tmp_path, postgres_url):
    """A worker paused (SIGSTOP) past 3 heartbeats has its trial failed by the other worker,
    which runs the study to its end; resumed, it says so in one line, leaves the trial's run
    directory as a failed trial's (no checkpoint, no model) and exits cleanly."""
    space, runs = write_space(tmp_path, epochs=12), tmp_path / "runs"
    study = f"space-{os.getpid()}-{time.monotonic_ns()}"
    storage = postgres_url
    common = ["--storage", storage, "--study", study, "--trials", "2", "--heartbeat", "1"]
    a = Worker(search_command(space, runs, data_dir, *common))
    b = None
    try:
        a.wait_for_line("worker 0 (")  # it asks for its trial next, long before B can
        b = Worker(search_command(space, runs, data_dir, *common))
        wait_for_first_epoch(runs / study / "trial-0", a)
        # Paused while training, not inside its write of the epoch's value: a worker stopped
        # mid-transaction holds the trial's row lock, and the other would wait on it.
        wait_until(
            lambda: (
                optuna.load_study(study_name=study, storage=storage)
                .get_trials(deepcopy=False)[0]
                .intermediate_values
            ),
            f"trial 0's first value: {a.report()}",
        )
        a.proc.send_signal(signal.SIGSTOP)
        assert b.finish(timeout=120) == 0, b.report()
        assert any(line.startswith("trial 0: failed, lost with its worker") for line in b.lines)
        a.proc.send_signal(signal.SIGCONT)
        assert a.finish() == 0, a.report()
    finally:
        for worker in (a, b):
            if worker is not None:
                worker.stop()
    said = [line for line in a.lines if "failed by another worker" in line]
    assert len(said) == 1 and said[0].startswith("trial 0: "), a.report()
    assert "Traceback" not in a.err and "Cannot tell" not in a.err, a.err
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    assert trials[0].state.name == "FAIL" and trials[0].user_attrs["lost"] is True
    assert trials[0].user_attrs["error"].startswith("no heartbeat for 3 s from worker ")
    assert [t.state.name != "FAIL" for t in trials] == [False, True, True]  # 2 that count
    folder = runs / study / "trial-0"
    info = json.loads((folder / rundir.RUN_INFO).read_text())
    assert info["search"]["failed"] == trials[0].user_attrs["error"] and not info["finished"]
    assert not (folder / rundir.CHECKPOINT).exists() and not (folder / rundir.MODEL).exists()
    check_no_trial_ran_twice(trials, runs / study)
