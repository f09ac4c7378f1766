"""`make stop` stops exactly the demo's background processes, and nothing else."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from python_worker.demo.services import DemoDirs, start_service, stop_services
from tests.support.whole_call import clean_env, wait_ready

PROJECT_DIR = Path(__file__).resolve().parents[2]


def test_stop_ends_the_demos_processes_and_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    dirs = DemoDirs(tmp_path / "demo")
    service = start_service(
        dirs,
        "emulators",
        ["emulators", "--dir", str(dirs.emulators)],
        clean_env(),
        PROJECT_DIR,
    )
    stranger = subprocess.Popen(["sleep", "60"])  # not ours, though its pid is in a pid file
    try:
        wait_ready("the emulators", dirs.env_file.is_file, service.process)
        (dirs.run / "worker.pid").write_text(f"{stranger.pid}\n")
        assert stop_services(dirs) == ["emulators"]
        assert service.process.wait(5) == 0  # stopped by SIGTERM, cleanly
        assert stranger.poll() is None
        assert list(dirs.run.glob("*.pid")) == []
        assert stop_services(dirs) == []
    finally:
        stranger.kill()
        stranger.wait()
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait()
    assert os.path.exists(dirs.logs / "emulators.log")


def test_the_timeline_shows_states_a_look_skipped_on_the_answered_path() -> None:
    from python_worker.demo.play import _passed_through

    assert _passed_through("ringing", "in_progress") == ["accepted"]
    assert _passed_through(None, "ringing") == ["queued"]
    assert _passed_through("ringing", "missed") == []
    assert _passed_through("in_progress", "completed") == []
