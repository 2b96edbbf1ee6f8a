"""The multi-device path on CPU: two logical devices stand in for two GPUs, so it runs in CI.

With several replicas, feature computation runs through the strategy (each replica a slice of the
batch, results gathered in order), the global batch is ``batch_size × replicas`` (each replica
keeps ``batch_size``) and the learning rate is scaled by the replicas, and ``model.fit`` splits
each global batch of the input pipeline across the replicas.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


# About a minute of one core (two TensorFlow processes with two logical devices each): in the slow
# tier (make test-all) so that make test stays near its 8-minute budget on two cores.
@pytest.mark.slow
def test_two_logical_devices_compute_the_same_features_and_train_with_scaled_settings(
    tmp_path: Path,
) -> None:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(
        [sys.executable, "-m", "tests.support.multi_device_driver", str(tmp_path)],
        cwd=REPOSITORY_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())

    assert result["replicas"] == 2
    assert result["features_mean_abs"] > 1e-3  # non-trivial features
    assert result["features_max_abs_diff"] == pytest.approx(0.0, abs=1e-4)
    assert result["global_batch_size"] == 8  # 2 replicas × --batch-size 4
    assert result["learning_rate"] == pytest.approx(2e-3)  # 2 × 1e-3
    assert result["optimizer_learning_rate"] == pytest.approx(2e-3)
    assert result["epochs"] == 1
    # Padding the uneven last batch for the replicas changes nothing: 7 predictions, and the val
    # accuracy Keras logged (padding weighted 0) is the accuracy of those 7.
    assert result["predictions_shape"] == [7, 3]
    assert result["val_accuracy_logged"] == pytest.approx(result["val_accuracy_recomputed"])
    assert result["variable_replicas"] == 2  # mirrored: one copy per device
    # --fine-tune-from: one frozen epoch and one fine-tuning epoch through the strategy, the
    # fine-tuned backbone variables mirrored.
    assert result["fine_tune_epochs"] == 2
    assert result["fine_tune_variable_replicas"] == 2
