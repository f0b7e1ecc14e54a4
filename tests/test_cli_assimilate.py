"""The ``assimilate`` command: posterior samples from an observation file, written atomically."""
from __future__ import annotations

import numpy as np
import pytest

from mindscience_diffuser.cli import main


@pytest.fixture
def observation_file(tmp_path):
    rng = np.random.default_rng(0)
    mask = (rng.random((1, 32, 32)) < 0.05).astype(np.float32)
    path = tmp_path / "obs.npz"
    np.savez(path, values=np.where(mask > 0, rng.standard_normal((1, 32, 32)), np.nan), mask=mask, noise_std=0.05)
    return path


def test_assimilate_writes_samples_mean_std_and_a_plot(tmp_path, observation_file, capsys):
    output, plot = tmp_path / "posterior.npz", tmp_path / "posterior.png"
    code = main(["assimilate", "--observations", str(observation_file), "--method", "dps", "--num-samples", "2",
                 "--steps", "1", "--mode", "pynative", "--quiet", "--output", str(output), "--plot", str(plot)])
    assert code == 0, capsys.readouterr().err
    with np.load(output) as archive:
        assert archive["samples"].shape == (2, 1, 32, 32)
        np.testing.assert_allclose(archive["mean"], archive["samples"].mean(axis=0), rtol=1e-5, atol=1e-6)
        assert archive["std"].shape == (1, 32, 32)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obs.npz", "posterior.npz", "posterior.png"]


@pytest.mark.parametrize("args, message", [
    (["--observations", "missing.npz"], "no such file"),
    (["--output", "/no/such/folder/post.npz"], "output folder does not exist"),
    (["--output", "post.npy"], "must end in .npz"),
    (["--method", "replace"], "noise-free"),
])
def test_assimilate_errors_exit_2_with_one_line(tmp_path, observation_file, capsys, args, message):
    argv = ["assimilate", "--observations", str(observation_file), "--num-samples", "2", "--steps", "1",
            "--mode", "pynative", "--quiet", "--output", str(tmp_path / "post.npz")]
    for flag, value in zip(args[::2], args[1::2]):
        index = argv.index(flag) if flag in argv else None
        if index is None:
            argv += [flag, value]
        else:
            argv[index + 1] = str(tmp_path / value) if flag == "--output" and "/" not in value else value
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "post.npz").exists()
