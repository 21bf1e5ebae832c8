"""Greedy generation with a .tflite's ``prefill_<len>`` and ``decode`` signatures (litert-torch's convention, batch 1),
in a fresh process that imports the standard library, numpy and ai_edge_litert only (run by path:
``python -P generation_litert_child.py MODEL.tflite IN.npz OUT.npz``). Same files as generation_child.py: each
prompt (a row of IN's right-padded batch) is prefilled alone, padded to the shortest prefill length that holds it.
Exit 3 if TensorFlow was imported (LiteRT alone must run it).
"""

import json
import os
import sys
import time


def main(argv) -> int:
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=argv[0])
    signatures = interp.get_signature_list()
    lengths = sorted(int(k.split("_", 1)[1]) for k in signatures if k.startswith("prefill_"))
    decode = interp.get_signature_runner("decode")
    names = [n for n in decode.get_input_details() if n.startswith("kv_cache_")]
    details = decode.get_input_details()
    with np.load(argv[1], allow_pickle=False) as z:
        ids, mask, new = z["input_ids"].astype(np.int32), z["attention_mask"].astype(np.int32), int(z["new_tokens"])
    all_tokens, all_logits, prefill_s, decode_s = [], [], 0.0, 0.0
    for row, row_mask in zip(ids, mask):
        n = int(row_mask.sum())
        length = next(k for k in lengths if k >= n)
        prefill = interp.get_signature_runner(f"prefill_{length}")
        tokens = np.zeros((1, length), np.int32)
        tokens[0, :n] = row[:n]
        caches = {k: np.zeros(details[k]["shape"], details[k]["dtype"]) for k in names}
        t0 = time.perf_counter()
        out = prefill(tokens=tokens, input_pos=np.arange(length, dtype=np.int32), **caches)
        prefill_s += time.perf_counter() - t0
        logits = out["logits"][0, n - 1]
        caches = {k: out[k] for k in names}
        got, steps = [], []
        t0 = time.perf_counter()
        for step in range(new):
            token = int(logits.argmax())
            got.append(token)
            steps.append(logits)
            if step == new - 1:
                break
            out = decode(tokens=np.array([[token]], np.int32), input_pos=np.array([n + step], np.int32), **caches)
            logits = out["logits"][0, 0]
            caches = {k: out[k] for k in names}
        decode_s += (time.perf_counter() - t0) / max(1, new - 1)
        all_tokens.append(got)
        all_logits.append(np.stack(steps))
    np.savez(argv[2], tokens=np.array(all_tokens, np.int32), logits=np.stack(all_logits).astype(np.float32))
    imported = "tensorflow" in sys.modules
    reply.write(json.dumps({"prefill_s": prefill_s, "decode_s_per_step": decode_s / len(ids), "signatures": sorted(signatures),
                            "imported": {m: m in sys.modules for m in ("tensorflow", "porter", "keras", "torch")}}) + "\n")
    reply.flush()
    return 3 if imported else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
