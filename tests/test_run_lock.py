"""Two processes that ask for the same run at the same time (two notebooks sharing a run,
or two test workers): one trains it, the other waits for it and reads it back."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("_shared_run.py")


def test_a_run_asked_for_twice_at_once_is_trained_once(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = [subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]  # fmt: skip
    done = [p.communicate(timeout=600) for p in started]
    assert all(p.returncode == 0 for p in started), [err[-2000:] for _, err in done]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in done]
    assert sorted(r["read_back"] for r in results) == [False, True]  # trained once
    assert results[0]["val_loss"] == results[1]["val_loss"]
    logs = list(tmp_path.rglob("*.csv"))
    for log in logs:  # one header: nobody appended to the log while it was written
        assert log.read_text().count("epoch") == 1, log.read_text()
