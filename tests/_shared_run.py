"""One process of ``test_run_lock.py``: run (or read back) one tiny CIFAR-100 run in the
runs folder given as argv[1], then print what happened as one JSON line."""

import json
import sys

from mtlkit import studies

settings = studies.cifar100_settings("quick", "synthetic", train_limit=100, eval_limit=100,
                                     epochs=1, synthetic_sizes=(200, 100))  # fmt: skip
run = studies.run_cifar100("shared_conv", 0, settings, runs_dir=sys.argv[1])
print(json.dumps({"read_back": run.read_back, "val_loss": run.history["val_loss"]}))
