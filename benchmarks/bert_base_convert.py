"""Time and memory of porter's direct torch -> tf conversion of a bert-base-shaped checkpoint.

Prints seconds for load+map and for saving (.keras, and the SavedModel export), and peak RSS.
For comparison (issue 2): transformers 4.57's own PyTorch->TF cross-loading of the same
checkpoint took 4.6 s load+map, 2.8 s to save an h5, 2.0 GB peak RSS (0.8 GB of it imports).

    python benchmarks/bert_base_convert.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAKE = """
import sys, torch, transformers
torch.manual_seed(0)
model = transformers.BertModel(transformers.BertConfig())
model.save_pretrained(sys.argv[1])
"""

MEASURE = """
import json, resource, sys, time
from pathlib import Path
def rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
from porter.frameworks import keras, torch, transformers
keras(); torch(); transformers()
import porter.zoo.bert.keras_model
t_import, rss_import = time.perf_counter() - t0, rss_mb()
from porter import zoo
from porter.checkpoints import open_torch_checkpoint, read_config
from porter.routes.direct import torch_to_keras
ckpt, out = Path(sys.argv[1]), Path(sys.argv[2])
entry = zoo.get("bert")
t0 = time.perf_counter()
config = entry.impl.full_config(read_config(ckpt))
model, plan = torch_to_keras(entry, open_torch_checkpoint(ckpt), config)
t_map, rss_map = time.perf_counter() - t0, rss_mb()
t0 = time.perf_counter()
from porter.frameworks import save_keras
save_keras(model, out / "model.keras")
t_keras = time.perf_counter() - t0
t0 = time.perf_counter()
entry.impl.export_saved_model(model, out / "saved_model")
t_sm = time.perf_counter() - t0
print(json.dumps(dict(import_s=t_import, rss_after_import_mb=rss_import, load_map_s=t_map, rss_after_map_mb=rss_map,
                      save_keras_s=t_keras, export_saved_model_s=t_sm, peak_rss_mb=rss_mb(), tensors=len(plan.steps))))
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, out = Path(tmp) / "bert-base", Path(tmp) / "out"
        out.mkdir()
        subprocess.run([sys.executable, "-c", MAKE, str(ckpt)], check=True, capture_output=True)
        size = sum(p.stat().st_size for p in ckpt.iterdir()) / 2**20
        runs = []
        for _ in range(2):  # the first run also warms the page cache
            res = subprocess.run([sys.executable, "-c", MEASURE, str(ckpt), str(out)], check=True, capture_output=True, text=True)
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
            for f in out.iterdir():
                subprocess.run(["rm", "-rf", str(f)], check=True)
    r = runs[-1]
    print(f"bert-base checkpoint: {size:.0f} MB, {r['tensors']} tensors mapped")
    print(f"framework imports:   {r['import_s']:.2f} s, RSS {r['rss_after_import_mb']:.0f} MB")
    print(f"load + map:          {r['load_map_s']:.2f} s   (transformers 4.57: 4.6 s)  ratio {r['load_map_s'] / 4.6:.2f}")
    print(f"save .keras:         {r['save_keras_s']:.2f} s   (transformers 4.57 h5: 2.8 s)  ratio {r['save_keras_s'] / 2.8:.2f}")
    print(f"export SavedModel:   {r['export_saved_model_s']:.2f} s   (serving signature with dynamic dims)")
    print(f"RSS after load+map:  {r['rss_after_map_mb']:.0f} MB")
    print(f"peak RSS:            {r['peak_rss_mb']:.0f} MB  (transformers 4.57: 2048 MB)  ratio {r['peak_rss_mb'] / 2048:.2f}")


if __name__ == "__main__":
    main()
