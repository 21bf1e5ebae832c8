"""What porter writes: all-or-nothing output folders, the report, sharded SavedModels, streamed .keras weights."""
