"""A zoo entry's config.json completed with transformers' defaults, computed beside other work.

Completing a config takes transformers' config class, and transformers 5's config module imports torch:
~1.8 s of imports. The direct route torch -> tf needs neither of them afterwards unless it verifies, but it
needs TensorFlow (~3 s to import) next. So, on a machine with a second core, the completion runs in a child
process (this module, ``python -m porter.readers.config_completion ENTRY``, the config on stdin) while this process
imports TensorFlow: bert-base's `convert --no-verify` takes 1.8 s less, and its process never holds torch or
transformers (~0.4 GB less memory: what an LLM-sized conversion has least to spare).
The child runs the same ``entry.impl.full_config``; where it fails for any reason but a PorterError, the
completion is done here again, so its errors and their handling are the in-process ones.
"""

from __future__ import annotations

import json
import sys

from porter import errors
from porter.process.child_process import answered, one_core, run_beside


def complete_beside(entry, config: dict, work) -> dict:
    """``entry.impl.full_config(config)``, computed while ``work()`` runs here. In this process when it already
    holds transformers (a caller imported it: the child would only repeat that) or has one core only."""
    if in_process():
        work()
        return entry.impl.full_config(config)
    status, answer = run_beside([sys.executable, "-m", "porter.readers.config_completion", entry.name], config, work, capture=True)
    if status == 0:
        return answered(json.loads(answer))["config"]
    return entry.impl.full_config(config)


def in_process() -> bool:
    return "transformers" in sys.modules or one_core()


def _main(entry_name: str) -> int:
    from porter import zoo

    config = json.loads(sys.stdin.read())
    try:
        payload = {"config": zoo.get(entry_name).impl.full_config(config)}
    except errors.PorterError as e:
        payload = {"error": errors.as_fields(e)}
    sys.stdout.write(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
