"""Celery's worker flags on a labelq worker: honoured where they can mean something, refused in one line where
they cannot, never silently ignored.

    -c N / --concurrency N        N worker processes, each with one model session (as `labelq worker --processes`)
    -P solo | prefork             accepted (prefork means processes: -c N); the model runs in each process itself
    -P threads | gevent | eventlet | custom, --autoscale
                                  refused at start (exit 2): one model session cannot be shared by threads or
                                  greenlets, and a process holds a model (a second is not started in milliseconds)
    --max-tasks-per-child N       a process that has settled N classifications stops claiming, hands back what it
    --max-memory-per-child KiB    holds, and is replaced (between batches); the same as LABELQ_MAX_TASKS_PER_CHILD
                                  and LABELQ_MAX_MEMORY_PER_CHILD

When processes are to be started or recycled, the command does not start a worker itself: it becomes their
supervisor (worker/process/launcher.py), which starts each child with the same command line, one process each,
and replaces a child that exits to be recycled at once.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from worker.errors import ConfigError

SUPERVISED_ENV = "LABELQ_SUPERVISED"  # set in a supervised child: it runs one worker, never supervises
EXIT_USAGE, EXIT_MODEL = 2, 4  # labelq's exit codes (README "Errors and exit codes"): a setting, a model
EXIT_RECYCLE = 75  # a child that exits to be recycled (EX_TEMPFAIL): replaced at once, not counted as a crash
ACCEPTED_POOLS = ("solo", "prefork", "processes")  # Celery's pool modules that mean "processes" here
# flags a child gets from the supervisor's command line in place of the supervisor's own
PROCESS_FLAGS = {"-c": True, "--concurrency": True, "-n": True, "--hostname": True}


@dataclass(frozen=True, slots=True)
class WorkerFlags:
    processes: int
    max_tasks_per_child: int | None
    max_memory_per_child_kb: int | None

    @property
    def supervised(self) -> bool:
        """Whether the command must start and watch processes rather than be the worker itself."""
        return self.processes > 1 or bool(self.max_tasks_per_child) or bool(self.max_memory_per_child_kb)


def pool_name(pool: Any) -> str:
    """A pool as Celery hands it over (a class, or its name or path): the name `-P` takes (`solo`, `prefork`,
    `threads`...), from Celery's own aliases."""
    from celery.concurrency import ALIASES

    path = pool if isinstance(pool, str) else f"{getattr(pool, '__module__', '')}:{getattr(pool, '__name__', '')}"
    found = [alias for alias, target in ALIASES.items() if target == path or alias == path]
    return found[0] if found else path


def read_flags(options: dict[str, Any], settings_tasks: int | None, settings_memory_kb: int | None) -> WorkerFlags:
    """What Celery's worker command was asked (its `celeryd_init` options), checked; `ConfigError` for a flag
    that cannot apply. A flag wins over the LABELQ_* setting of the same meaning."""
    pool = options.get("pool") or options.get("pool_cls")  # the CLI's -P arrives as `pool`
    if pool is not None and pool_name(pool) not in ACCEPTED_POOLS:
        name = pool_name(pool)
        raise ConfigError(
            f"-P {name}: a labelq worker runs its model in its own process (pool solo); {name} cannot share one "
            "model session: drop -P and use -c N for N processes"
        )
    if options.get("autoscale"):
        raise ConfigError(
            "--autoscale: a labelq worker process holds a model session, which takes seconds to load; run a fixed "
            "number with -c N and scale by processes or hosts (docs/worker.md)"
        )
    processes = int(options.get("concurrency") or 1)
    if processes < 1:
        raise ConfigError(f"-c {processes}: at least one process")
    for flag, unit in (("max_tasks_per_child", "tasks"), ("max_memory_per_child", "KiB")):
        given = options.get(flag)
        if given is not None and int(given) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} {given}: a positive number of {unit} (leave it out: never)")
    tasks = options.get("max_tasks_per_child") or settings_tasks
    memory = options.get("max_memory_per_child") or settings_memory_kb
    return WorkerFlags(processes, int(tasks) if tasks else None, int(memory) if memory else None)


def child_argv(argv: list[str], index: int, hostname: str) -> list[str]:
    """The supervisor's own `celery ... worker` command line for child `index`: one process, its own node name
    (`name-<index>@host`), every other flag as given."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        flag, has_value, _ = arg.partition("=")
        if flag in PROCESS_FLAGS:
            skip = not has_value  # the value is the next argument
            continue
        if arg.startswith("-c") and arg[2:].isdigit():  # -c4
            continue
        kept.append(arg)
    name = hostname.replace("@", f"-{index}@", 1) if "@" in hostname else f"{hostname}-{index}"
    return [*kept, "-c", "1", "-n", name]


def is_supervised_child() -> bool:
    return os.environ.get(SUPERVISED_ENV) == "1"


def refuse(message: str, code: int = EXIT_USAGE) -> None:
    """One line on stderr and exit 2 (a usage problem; EXIT_MODEL: a model problem), before anything starts."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


@dataclass(frozen=True, slots=True)
class Recycle:
    """When a worker process asks to be replaced: after `max_tasks` settled classifications, or once its resident
    memory passes `max_memory_kb` (both looked at between batches)."""

    max_tasks: int | None = None
    max_memory_kb: int | None = None

    def reason(self, processed: int) -> str | None:
        if self.max_tasks and processed >= self.max_tasks:
            return f"settled {processed} classifications (max tasks per child {self.max_tasks})"
        if self.max_memory_kb:
            resident_kb = resident_memory_kb()
            if resident_kb > self.max_memory_kb:
                return f"resident memory {resident_kb} KiB (max memory per child {self.max_memory_kb} KiB)"
        return None


def resident_memory_kb() -> int:
    """This process's resident memory now (Linux /proc), else its peak (getrusage: KiB on Linux)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
