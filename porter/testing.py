"""Helpers for a user's own test suite: ``assert_equivalent(reference, candidate, **options)``."""

from __future__ import annotations

from porter.errors import VerificationFailed


def assert_equivalent(reference, candidate, **options):
    """Verify ``candidate`` against ``reference`` as ``porter.verify`` does (same options); raise
    VerificationFailed (an AssertionError) carrying the rendered table when they differ.
    Returns the result when they agree; with a latency gate too noisy to decide ("unstable"), warns and returns it."""
    from porter.verifiers.api import verify
    from porter.verifiers.console import render

    result = verify(reference, candidate, **options)
    if result.status == "unstable":  # equivalent; the latency gate could not decide: neither a pass nor a fail
        import warnings

        warnings.warn(f"porter: latency unstable: {result.latency.get('reason', '')}", stacklevel=2)
        return result
    if not result:
        raise VerificationFailed(result, "\n" + render(result, _console()))
    return result


def _console():
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), record=True, width=160, color_system=None)
