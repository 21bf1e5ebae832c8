"""The SavedModels porter writes keep their variables in shards of at most SHARD_BYTES, as checkpoints on a hub
are sharded: a 7B model's 13.5 GB would otherwise be one `variables.data-00000-of-00001`, over S3's 5 GB limit
for a single upload and awkward to copy. TensorFlow's own policy does the sharding (it slices a variable larger
than a shard); loading reads the shards back as one checkpoint."""

from __future__ import annotations

SHARD_BYTES = 4 * 2**30


def save_options():
    """tf.saved_model.SaveOptions for every SavedModel porter writes."""
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=SHARD_BYTES)
    return tf.saved_model.SaveOptions(experimental_sharding_callback=policy)
