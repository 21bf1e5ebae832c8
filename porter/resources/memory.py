"""The process's own peak memory, recorded after each conversion step in porter_report.json."""

from __future__ import annotations


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process so far (MB); None where the platform has no getrusage."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if __import__("sys").platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
