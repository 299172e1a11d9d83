# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the PGTune computation, pure and without I/O.

The numbers follow PGTune (le0pard/pgtune, the public calculator) in its 2026
formulas: the same inputs give the same settings, printed the same way
(memory in the largest unit that divides exactly: ``kB``, ``MB``, ``GB``), in
the same order, and settings that PGTune leaves out are left out here too.
PGTune does its arithmetic in IEEE doubles; Python floats are the same doubles,
so every division and floor below is done in the same order as PGTune does it.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import math
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

KB_PER_MB = 1024
KB_PER_GB = 1024 * 1024

DB_TYPES = ("web", "oltp", "dw", "desktop", "mixed")
STORAGES = ("ssd", "hdd", "san", "nvme")
OS_TYPES = ("linux", "windows", "mac")
DATA_SIZES = ("less_than_ram", "up_to_3x_ram", "more_than_3x_ram")
MIN_PG_VERSION = 10
DEFAULT_PG_VERSION = 18

DEFAULT_MAX_CONNECTIONS = {"web": 200, "oltp": 300, "dw": 40, "desktop": 20, "mixed": 100}
_DEFAULT_MAX_WORKER_PROCESSES = 8  # PostgreSQL's default, used for work_mem below 4 CPUs

# min_wal_size / max_wal_size in MB per workload.
_MIN_WAL_MB = {"web": 1024, "oltp": 2048, "dw": 4096, "desktop": 100, "mixed": 1024}
_MAX_WAL_MB = {"web": 4096, "oltp": 8192, "dw": 16384, "desktop": 2048, "mixed": 4096}
_EFFECTIVE_IO_CONCURRENCY = {"hdd": 2, "ssd": 200, "san": 300, "nvme": 1000}


class PgTuneInput(t.NamedTuple):
    """What PGTune asks for. ``memory`` is in bytes; ``max_connections`` None means the workload default."""

    memory: int
    cpus: t.Optional[int]
    db_type: str = "mixed"
    storage: str = "ssd"
    max_connections: t.Optional[int] = None
    pg_version: int = DEFAULT_PG_VERSION
    os_type: str = "linux"
    data_size: str = "up_to_3x_ram"


def format_memory(kb: int) -> str:
    """PGTune's formatting of a kB amount: GB or MB when that loses nothing, else kB."""
    kb = int(kb)
    if kb % KB_PER_GB == 0:
        return "%dGB" % (kb // KB_PER_GB)
    if kb % KB_PER_MB == 0:
        return "%dMB" % (kb // KB_PER_MB)
    return "%dkB" % kb


def validate(inp: PgTuneInput) -> None:
    """Raise RansomeyeError with a clear message for inputs PGTune would refuse."""
    if inp.db_type not in DB_TYPES:
        raise RansomeyeError("db_type must be one of %s, not %r" % (", ".join(DB_TYPES), inp.db_type))
    if inp.storage not in STORAGES:
        raise RansomeyeError("storage must be one of %s, not %r" % (", ".join(STORAGES), inp.storage))
    if inp.os_type not in OS_TYPES:
        raise RansomeyeError("os_type must be one of %s, not %r" % (", ".join(OS_TYPES), inp.os_type))
    if inp.data_size not in DATA_SIZES:
        raise RansomeyeError("data_size must be one of %s, not %r" % (", ".join(DATA_SIZES), inp.data_size))
    if not isinstance(inp.memory, int) or isinstance(inp.memory, bool) or inp.memory < KB_PER_MB * 1024:
        raise RansomeyeError("memory must be at least 1MB, not %r bytes" % (inp.memory,))
    if inp.cpus is not None and (isinstance(inp.cpus, bool) or int(inp.cpus) < 1):
        raise RansomeyeError("cpus must be a whole number of at least 1, not %r" % (inp.cpus,))
    if inp.max_connections is not None and int(inp.max_connections) < 1:
        raise RansomeyeError("max_connections must be at least 1, not %r" % (inp.max_connections,))
    if int(inp.pg_version) < MIN_PG_VERSION:
        raise RansomeyeError("pg_version must be %d or newer, not %r" % (MIN_PG_VERSION, inp.pg_version))


class _Calc:
    """Each PGTune quantity as a method, in kB for memory, as PGTune computes it."""

    def __init__(self, inp: PgTuneInput) -> None:
        self.inp = inp
        self.total_kb = inp.memory / 1024  # a double, as in PGTune
        self.version = int(inp.pg_version)
        self.windows = inp.os_type == "windows"

    def max_connections(self) -> int:
        if self.inp.max_connections:
            return int(self.inp.max_connections)
        return DEFAULT_MAX_CONNECTIONS[self.inp.db_type]

    def shared_buffers(self) -> int:
        divisor = 16 if self.inp.db_type == "desktop" else 4
        value = math.floor(self.total_kb / divisor)
        if self.version < 10 and self.windows:
            value = min(value, 512 * KB_PER_MB)
        return value

    def huge_pages(self) -> str:
        if self.inp.os_type == "mac":
            return "off"
        return "try" if self.shared_buffers() >= 2 * KB_PER_GB else "off"

    def effective_cache_size(self) -> int:
        if self.inp.db_type == "desktop":
            return math.floor(self.total_kb / 4)
        return math.floor((self.total_kb * 3) / 4)

    def _windows_small_limit(self) -> bool:
        return self.windows and self.version <= 17

    def maintenance_work_mem(self) -> int:
        divisor = 8 if self.inp.db_type == "dw" else 16
        value = math.floor(self.total_kb / divisor)
        limit = 2 * KB_PER_GB if self._windows_small_limit() else 8 * KB_PER_GB
        if value >= limit:
            value = limit - KB_PER_MB if self._windows_small_limit() else limit
        return value

    def wal_buffers(self) -> int:
        value = math.floor((3 * self.shared_buffers()) / 100)
        cap = 16 * KB_PER_MB
        if value > cap:
            value = cap
        # PGTune rounds up to an even 16MB when close to it.
        if 14 * KB_PER_MB < value < cap:
            value = cap
        if value < 32:
            value = 32
        return value

    def default_statistics_target(self) -> int:
        return 500 if self.inp.db_type == "dw" else 100

    def random_page_cost(self) -> str:
        if self.inp.data_size == "less_than_ram":
            return "1.1"
        if self.inp.storage == "hdd" or self.inp.db_type == "dw":
            return "4"
        return "1.1"

    def effective_io_concurrency(self) -> t.Optional[int]:
        if self.inp.os_type != "linux":
            return None
        return _EFFECTIVE_IO_CONCURRENCY[self.inp.storage]

    def parallel(self) -> t.List[t.Tuple[str, int]]:
        cpus = self.inp.cpus
        if not cpus or cpus < 4:
            return []
        per_gather = math.ceil(cpus / 2)
        if self.inp.db_type != "dw" and per_gather > 4:
            per_gather = 4
        settings = [("max_worker_processes", cpus), ("max_parallel_workers_per_gather", per_gather)]
        if self.version >= 10:
            settings.append(("max_parallel_workers", cpus))
        if self.version >= 11:
            settings.append(("max_parallel_maintenance_workers", min(4, math.ceil(cpus / 2))))
        return settings

    def work_mem(self) -> int:
        parallel = dict(self.parallel())
        workers = parallel.get("max_worker_processes") or _DEFAULT_MAX_WORKER_PROCESSES
        base = (self.total_kb - self.shared_buffers()) / ((self.max_connections() + workers) * 3)
        divisor = {"web": 1, "oltp": 1, "dw": 2, "desktop": 6, "mixed": 2}[self.inp.db_type]
        value = math.floor(base / divisor) if divisor != 1 else math.floor(base)  # PGTune divides only when != 1
        if self.inp.data_size == "less_than_ram":
            value = math.floor(value * 1.3)
        elif self.inp.data_size == "more_than_3x_ram":
            value = math.floor(value * 0.9)
        if value < 4 * KB_PER_MB:
            value = 4 * KB_PER_MB
        if self._windows_small_limit() and value > 2 * KB_PER_GB - KB_PER_MB:
            value = 2 * KB_PER_GB - KB_PER_MB
        return value

    def jit(self) -> t.Optional[str]:
        if self.version >= 12 and self.inp.db_type in ("web", "oltp", "mixed"):
            return "off"
        return None

    def wal_compression(self) -> t.Optional[str]:
        if self.version >= 15:
            return "lz4"
        if self.version >= 10:
            return "on"
        return None

    def autovacuum_max_workers(self) -> t.Optional[int]:
        cpus = self.inp.cpus
        if not cpus:
            return None
        if cpus >= 32:
            return 5
        if cpus >= 16:
            return 4
        return None

    def autovacuum_work_mem(self) -> t.Optional[int]:
        threshold = 2 * KB_PER_GB
        if self.maintenance_work_mem() < threshold:
            return None
        if self._windows_small_limit():
            return threshold - KB_PER_MB
        return threshold

    def io_method(self) -> t.Optional[str]:
        if self.version < 18:
            return None
        return "io_uring" if self.inp.os_type == "linux" else "worker"

    def io_workers(self) -> t.Optional[int]:
        cpus = self.inp.cpus
        if self.version < 18 or not cpus or self.io_method() == "io_uring":
            return None
        value = min(32, max(3, math.floor(cpus / 4)))
        return value if value > 3 else None

    def warnings(self) -> t.List[str]:
        lines: t.List[str] = []
        memory = self.inp.memory
        if memory < 256 * 1024 * 1024:
            lines += ["this tool not being optimal", "for low memory systems"]
        elif memory > 100 * 1024 * 1024 * 1024:
            lines += ["this tool not being optimal", "for very high memory systems"]
        if self.wal_compression() == "lz4":
            lines += [""] if lines else []
            lines += ["wal_compression = lz4 requires PostgreSQL", "to be compiled with --with-lz4"]
        if self.io_method() == "io_uring":
            lines += [""] if lines else []
            lines += ["io_method = io_uring requires PostgreSQL", "to be compiled with --with-liburing"]
        if self.inp.db_type == "dw" and self.inp.storage != "hdd" and self.inp.data_size != "less_than_ram":
            drive = {"ssd": "SSDs", "nvme": "NVMe drives", "san": "SAN storage"}[self.inp.storage]
            lines += [""] if lines else []
            lines += [
                "Cost parameters for Data Warehouses on %s are left at defaults" % drive,
                "to avoid catastrophic index scan selections",
                "Monitor query planner behavior and adjust random_page_cost if necessary",
            ]
        return ["WARNING"] + lines if lines else []


def _mem(value: t.Optional[int]) -> t.Optional[str]:
    return None if value is None else format_memory(value)


def compute(inp: PgTuneInput) -> t.Dict[str, str]:
    """The settings PGTune prints for ``inp``, name -> printed value, in PGTune's order."""
    validate(inp)
    calc = _Calc(inp)
    items: t.List[t.Tuple[str, t.Any]] = [
        ("max_connections", calc.max_connections()),
        ("shared_buffers", format_memory(calc.shared_buffers())),
        ("effective_cache_size", format_memory(calc.effective_cache_size())),
        ("maintenance_work_mem", format_memory(calc.maintenance_work_mem())),
        ("checkpoint_completion_target", "0.9"),
        ("wal_buffers", format_memory(calc.wal_buffers())),
        ("default_statistics_target", calc.default_statistics_target()),
        ("random_page_cost", calc.random_page_cost()),
        ("effective_io_concurrency", calc.effective_io_concurrency()),
        ("work_mem", format_memory(calc.work_mem())),
        ("huge_pages", calc.huge_pages()),
        ("jit", calc.jit()),
        ("wal_compression", calc.wal_compression()),
        ("autovacuum_max_workers", calc.autovacuum_max_workers()),
        ("autovacuum_work_mem", _mem(calc.autovacuum_work_mem())),
        ("io_method", calc.io_method()),
        ("io_workers", calc.io_workers()),
        ("min_wal_size", format_memory(_MIN_WAL_MB[inp.db_type] * KB_PER_MB)),
        ("max_wal_size", format_memory(_MAX_WAL_MB[inp.db_type] * KB_PER_MB)),
    ]
    items += calc.parallel()
    if inp.db_type == "desktop":
        # max_wal_senders must be 0 when wal_level is minimal.
        items += [("wal_level", "minimal"), ("max_wal_senders", "0")]
    # PGTune leaves out every setting it has no value for.
    return dict((name, str(value)) for name, value in items if value is not None and value != 0)


def warnings(inp: PgTuneInput) -> t.List[str]:
    """PGTune's warning lines (shown as comments above its output) for ``inp``."""
    validate(inp)
    return _Calc(inp).warnings()


def explain(inp: PgTuneInput) -> t.Dict[str, str]:
    """One line per computed setting saying where its number comes from."""
    calc = _Calc(inp)
    conns = calc.max_connections()
    workers = dict(calc.parallel()).get("max_worker_processes") or _DEFAULT_MAX_WORKER_PROCESSES
    return {
        "max_connections": "given" if inp.max_connections else "PGTune default for db_type %s" % inp.db_type,
        "shared_buffers": "RAM / %d" % (16 if inp.db_type == "desktop" else 4),
        "effective_cache_size": "RAM x %s" % ("1/4" if inp.db_type == "desktop" else "3/4"),
        "maintenance_work_mem": "RAM / %d, capped at %s" % (
            8 if inp.db_type == "dw" else 16, "2GB - 1MB" if calc._windows_small_limit() else "8GB"),
        "wal_buffers": "3% of shared_buffers, between 32kB and 16MB",
        "work_mem": "(RAM - shared_buffers) / ((max_connections %d + max_worker_processes %d) x 3), "
                    "scaled for db_type %s and data_size %s, at least 4MB" % (conns, workers, inp.db_type, inp.data_size),
        "random_page_cost": "storage %s, data_size %s, db_type %s" % (inp.storage, inp.data_size, inp.db_type),
        "effective_io_concurrency": "storage %s on %s" % (inp.storage, inp.os_type),
        "huge_pages": "try from 2GB of shared_buffers (never on mac)",
        "parallel": "only from 4 CPUs (%s given)" % (inp.cpus,),
    }
