"""The porter process itself: signals, crash handling, child processes, progress, lazy framework imports."""
