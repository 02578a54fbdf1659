"""Stopping a child process the polite way first: SIGTERM (a worker's warm shutdown), SIGKILL if it outstays."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Terminate `process` if it still runs; kill it if it has not exited within `timeout_s`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
