"""Greedy generation with a SavedModel's ``prefill`` and ``decode`` signatures alone, in a fresh process that imports
the standard library, numpy and TensorFlow, nothing of porter, keras or torch (run by path:
``python -P generation_child.py SAVED_MODEL IN.npz OUT.npz``): what a TF Serving client's loop does.

IN.npz: ``input_ids`` and ``attention_mask`` (batch, seq) int32, right-padded prompts; ``new_tokens`` (scalar).
OUT.npz: ``tokens`` (batch, new_tokens) int32 (greedy: argmax of each step's logits), ``logits`` (batch, new_tokens,
vocab) float32 (step 0: prefill's logits at each row's last prompt token; step k: decode's k-th logits).
stdout, one JSON line: {"prefill_s", "decode_s_per_step", "signatures", "imported": {module: bool}}.
"""

import json
import os
import sys
import time


def main(argv) -> int:
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library prints go to stderr
    import numpy as np
    import tensorflow as tf

    model = tf.saved_model.load(argv[0])
    prefill, decode = model.signatures["prefill"], model.signatures["decode"]
    with np.load(argv[1], allow_pickle=False) as z:
        ids, mask, new = z["input_ids"].astype(np.int32), z["attention_mask"].astype(np.int32), int(z["new_tokens"])
    rows = np.arange(ids.shape[0])
    t0 = time.perf_counter()
    out = prefill(input_ids=tf.constant(ids), attention_mask=tf.constant(mask))
    prefill_s = time.perf_counter() - t0
    logits = out["logits"].numpy()[rows, mask.sum(axis=1) - 1]  # each row's last prompt token
    state = {k: v for k, v in out.items() if k.startswith("kv_cache_") or k == "cache_position"}
    tokens, steps = [], []
    t0 = time.perf_counter()
    for step in range(new):
        token = logits.argmax(axis=-1).astype(np.int32)
        tokens.append(token)
        steps.append(logits)
        if step == new - 1:
            break
        out = decode(input_ids=tf.constant(token[:, None]), **state)  # the cache passed back by name
        logits = out["logits"].numpy()[:, 0]
        state = {k: v for k, v in out.items() if k.startswith("kv_cache_") or k == "cache_position"}
    decode_s = (time.perf_counter() - t0) / max(1, new - 1)
    np.savez(argv[2], tokens=np.stack(tokens, axis=1), logits=np.stack(steps, axis=1).astype(np.float32))
    reply.write(json.dumps({"prefill_s": prefill_s, "decode_s_per_step": decode_s, "signatures": sorted(model.signatures),
                            "imported": {m: m in sys.modules for m in ("porter", "keras", "keras_hub", "torch")}}) + "\n")
    reply.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
