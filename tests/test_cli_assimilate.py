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


@pytest.mark.parametrize("method", [["dps"], ["pigdm", "--data-std", "0.3"]])
def test_assimilate_writes_samples_mean_std_and_a_plot(tmp_path, observation_file, capsys, method):
    output, plot = tmp_path / "posterior.npz", tmp_path / "posterior.png"
    code = main(["assimilate", "--observations", str(observation_file), "--method", *method, "--num-samples", "2",
                 "--steps", "1", "--mode", "pynative", "--quiet", "--output", str(output), "--plot", str(plot)])
    assert code == 0, capsys.readouterr().err
    with np.load(output) as archive:
        assert archive["samples"].shape == (2, 1, 32, 32)
        np.testing.assert_allclose(archive["mean"], archive["samples"].mean(axis=0), rtol=1e-5, atol=1e-6)
        assert archive["std"].shape == (1, 32, 32)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obs.npz", "posterior.npz", "posterior.png"]


def test_assimilate_data_std_sets_the_pigdm_prior_scale(tmp_path, observation_file, capsys):
    outputs = []
    for extra in ([], ["--data-std", "0.3"]):
        outputs.append(tmp_path / f"posterior{len(outputs)}.npz")
        assert main(["assimilate", "--observations", str(observation_file), "--method", "pigdm", *extra,
                     "--num-samples", "2", "--steps", "2", "--mode", "pynative", "--quiet",
                     "--output", str(outputs[-1])]) == 0, capsys.readouterr().err
    unit, scaled = (np.load(path)["samples"] for path in outputs)
    assert np.isfinite(scaled).all() and np.abs(unit - scaled).max() > 1e-3


@pytest.mark.parametrize("args, message", [
    (["--observations", "missing.npz"], "no such file"),
    (["--output", "/no/such/folder/post.npz"], "output folder does not exist"),
    (["--output", "post.npy"], "must end in .npz"),
    (["--method", "replace"], "noise-free"),
    (["--method", "dps", "--data-std", "0.3"], "needs --method pigdm or mmps"),
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


@pytest.mark.parametrize("value", ["0", "-0.3", "inf", "nan", "wide"])
def test_assimilate_refuses_a_data_std_that_is_not_a_positive_number(tmp_path, observation_file, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(["assimilate", "--observations", str(observation_file), "--method", "pigdm",
                               "--data-std", value, "--output", str(tmp_path / "post.npz")]))
    assert exit_info.value.code == 2
    assert f"--data-std: must be a positive number, got {value!r}" in capsys.readouterr().err
    assert not (tmp_path / "post.npz").exists()


@pytest.mark.parametrize("method, expected", [("pigdm", "PiGDM"), ("mmps", "MMPS")])
def test_assimilate_data_std_configures_the_chosen_method(tmp_path, observation_file, monkeypatch, method, expected):
    """--data-std builds the method itself with that σ_d (MMPS: its safeguard's ΠGDM fallback)."""
    from mindscience_diffuser import cli

    calls = []

    class Recorder:
        def set_progress_bar_config(self, **kwargs):
            pass

        def __call__(self, **kwargs):
            calls.append(kwargs)
            raise KeyboardInterrupt  # stop before any compute

    monkeypatch.setattr(cli, "_build_pipeline", lambda *args: Recorder())
    with pytest.raises(KeyboardInterrupt):
        main(["assimilate", "--observations", str(observation_file), "--method", method, "--data-std", "0.5",
              "--output", str(tmp_path / "post.npz")])
    guide = calls[0]["guidance"]
    assert type(guide).__name__ == expected and guide.data_std == 0.5
    assert not (tmp_path / "post.npz").exists()
