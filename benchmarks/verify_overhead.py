"""How long `porter verify` of a tiny BERT takes beyond importing the frameworks.

    python benchmarks/verify_overhead.py [--repeat 3]

Setup (not timed): a tiny BERT HF folder and its porter TF conversion in a temporary folder.
Then, in a fresh interpreter per repeat: the import time of torch, TensorFlow/Keras and
transformers, and the time of porter.verify (HF torch folder vs SavedModel, 4 shapes, no
reports written) once the frameworks are loaded, first and second call in the process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TINY_BERT = dict(
    model_type="bert", vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=37, max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu",
)

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from porter.process.frameworks import keras, tensorflow, torch, transformers
torch(); tensorflow(); keras(); transformers()
t1 = time.perf_counter()
import porter
result = porter.verify(sys.argv[1], sys.argv[2])
t2 = time.perf_counter()
again = porter.verify(sys.argv[1], sys.argv[2])
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_verify_s": t2 - t1, "second_verify_s": t3 - t2, "passed": bool(result) and bool(again)}))
"""


def setup(root: Path) -> tuple[Path, Path]:
    import torch
    import transformers

    import porter

    ckpt = root / "tiny-bert"
    torch.manual_seed(0)
    cfg = transformers.BertConfig(**{k: v for k, v in TINY_BERT.items() if k != "model_type"})
    model = transformers.BertModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(ckpt)
    out = root / "tiny-bert-tf"
    porter.convert(str(ckpt), source="torch", target="tf", out=out, verify=False)
    return ckpt, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, out = setup(Path(tmp))
        runs = []
        for _ in range(args.repeat):
            proc = subprocess.run([sys.executable, "-c", CHILD, str(ckpt), str(out)], capture_output=True, text=True, check=True)
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = {k: min(r[k] for r in runs) for k in ("import_s", "first_verify_s", "second_verify_s")}
    print(f"tiny BERT (HF torch folder vs porter SavedModel, 4 input shapes), best of {args.repeat} fresh interpreters:")
    print(f"  import torch + tensorflow/keras + transformers : {best['import_s']:.2f} s")
    print(f"  porter.verify, first in the process           : {best['first_verify_s']:.2f} s  (loads both models, traces TF)")
    print(f"  porter.verify, second in the process          : {best['second_verify_s']:.2f} s")
    print(f"  all passed: {all(r['passed'] for r in runs)}")


if __name__ == "__main__":
    main()
