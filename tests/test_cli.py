"""The command line: every job file in configs/ runs, flags override files, and bad input is
one error line with exit status 2 and no output file."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mindscience_diffuser as msd
from mindscience_diffuser import cli
from mindscience_diffuser.training import SyntheticFieldDataset

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def tiny_unet():
    return msd.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    msd.DDIMPipeline(unet=tiny_unet(), scheduler=msd.DDIMScheduler(num_train_timesteps=100)).save_pretrained(folder)
    return folder


def run(*args):
    return cli.main([str(a) for a in args])


@pytest.fixture(scope="module")
def model_dirs(model_dir, tmp_path_factory):
    """A pipeline folder of each model kind the job files need (VP, VE, consistency)."""
    ve, cm = tmp_path_factory.mktemp("ve"), tmp_path_factory.mktemp("cm")
    ve_scheduler = msd.ScoreSdeVeScheduler(num_train_timesteps=100)
    msd.ScoreSdeVePipeline(unet=tiny_unet(), scheduler=ve_scheduler).save_pretrained(ve)
    msd.ConsistencyModelPipeline(unet=tiny_unet(), scheduler=msd.CMStochasticIterativeScheduler()).save_pretrained(cm)
    return {"ddim": model_dir, "dpmsolver": model_dir, "sde_ve": ve, "consistency": cm}


@pytest.mark.parametrize("job", ["ddim", "dpmsolver", "sde_ve", "consistency"])
def test_every_sampling_job_file_runs(job, model_dirs, tmp_path):
    out = tmp_path / "grid.png"
    raw = tmp_path / "raw.npy"
    steps = ["--steps", "3"] if job != "consistency" else []
    code = run("sample", "--config", CONFIGS / f"{job}.yaml", "--model", model_dirs[job], "--output", out,
               "--save-npy", raw, "--batch-size", 2, "--mode", "pynative", "--quiet", *steps)
    assert code == 0 and out.stat().st_size > 0
    fields = np.load(raw)
    assert fields.shape == (2, 1, 8, 8) and np.all(np.isfinite(fields))


def test_sample_uses_the_folders_own_pipeline_and_saves_unclipped_fields(tmp_path, capsys):
    folder = tmp_path / "dpm"
    scheduler = msd.DPMSolverMultistepScheduler(num_train_timesteps=100, use_lu_lambdas=True)
    msd.DPMSolverPipeline(unet=tiny_unet(), scheduler=scheduler).save_pretrained(folder)
    raw = tmp_path / "raw.npy"
    assert run("sample", "--model", folder, "--steps", 3, "--batch-size", 2, "--output", tmp_path / "g.png",
               "--save-npy", raw, "--mode", "pynative", "--quiet") == 0
    assert "dpmsolver, 3 steps" in capsys.readouterr().out
    pipe = msd.DPMSolverPipeline.from_pretrained(folder)
    # The command draws sample i from default_rng([seed, i]), whatever the batch or the worker.
    generators = [np.random.default_rng([0, i]) for i in range(2)]
    expected = pipe(batch_size=2, num_inference_steps=3, generator=generators, output_type="latent").images.asnumpy()
    np.testing.assert_allclose(np.load(raw), expected, rtol=1e-5, atol=1e-6)
    assert cli._model_pipeline(tmp_path) == "ddim"  # no model_index.json: the DDIM default


def test_flags_override_job_file(model_dir, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert run("sample", "--config", CONFIGS / "ddim.yaml", "--model", model_dir, "--steps", 2, "--batch-size", 3,
               "--output", out, "--mode", "pynative", "--quiet") == 0
    printed = capsys.readouterr().out
    assert "3 samples" in printed and "2 steps" in printed and out.exists()


def test_same_seed_same_png(model_dir, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    for path in (a, b):
        run("sample", "--model", model_dir, "--steps", 2, "--batch-size", 2, "--seed", 7, "--eta", 1.0,
            "--output", tmp_path / "g.png", "--save-npy", path, "--mode", "pynative", "--quiet")
    np.testing.assert_array_equal(np.load(a), np.load(b))


@pytest.mark.parametrize(
    "args,message",
    [
        (["sample", "--model", "/no/such/model"], "unet/config.json"),
        (["sample", "--config", "/no/such.yaml"], "no such file"),
        (["sample", "--steps", "0"], "positive integer"),
        (["sample", "--pipeline", "heun"], "invalid choice"),
        (["sample", "--eta", "2"], "eta"),
        (["evaluate", "--generated", "/no/such.npy", "--reference", "/no/such.npy"], "no such file"),
        (["evaluate", "--generated", "x.npy"], "needs --reference"),
        (["invert"], "needs --input"),
        (["convert", "--input", "/no/such", "--output", "x.ckpt"], "no such file"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(cli.main(args))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_job_file_key_and_bad_job_value(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("pipeline: ddim\nstepz: 3\n")
    assert run("sample", "--config", job) == 2
    assert "stepz" in capsys.readouterr().err
    job.write_text("steps: -4\n")
    assert run("sample", "--config", job) == 2
    assert "steps must be a positive integer" in capsys.readouterr().err


def test_failed_run_leaves_no_output_file(model_dir, tmp_path):
    out = tmp_path / "samples.png"
    # a bad eta is rejected before any file is written
    assert run("sample", "--model", model_dir, "--eta", "1.5", "--output", out) == 2
    assert not out.exists() and not list(tmp_path.glob(".samples*"))


def test_convert_round_trip(model_dir, tmp_path):
    ckpt = tmp_path / "unet.ckpt"
    assert run("convert", "--input", model_dir, "--output", ckpt) == 0
    back = tmp_path / "back"
    assert run("convert", "--input", ckpt, "--output", back, "--model-config", model_dir / "unet" / "config.json") == 0
    original = msd.UNet2DModel.from_pretrained(model_dir / "unet")
    restored = msd.UNet2DModel.from_pretrained(back)
    for name, param in original.parameters_dict().items():
        np.testing.assert_array_equal(param.asnumpy(), restored.parameters_dict()[name].asnumpy())


def test_convert_rejects_a_checkpoint_that_does_not_fit(model_dir, tmp_path, capsys):
    ckpt = tmp_path / "unet.ckpt"
    run("convert", "--input", model_dir, "--output", ckpt)
    other = tmp_path / "other.json"
    config = json.loads((model_dir / "unet" / "config.json").read_text())
    config["block_out_channels"] = [8, 32]
    other.write_text(json.dumps(config))
    assert run("convert", "--input", ckpt, "--output", tmp_path / "x", "--model-config", other) == 2
    assert "does not fit" in capsys.readouterr().err


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "mindscience_diffuser", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "sample" in result.stdout and "convert" in result.stdout


def test_sample_then_evaluate(model_dir, tmp_path, capsys):
    generated = tmp_path / "gen.npy"
    run("sample", "--model", model_dir, "--steps", 2, "--batch-size", 4, "--output", tmp_path / "g.png",
        "--save-npy", generated, "--mode", "pynative", "--quiet")
    reference = tmp_path / "ref.npy"
    np.save(reference, np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32) * 0.3)
    capsys.readouterr()
    metrics_file = tmp_path / "metrics.json"
    assert run("evaluate", "--generated", generated, "--reference", reference, "--output", metrics_file) == 0
    metrics = json.loads(metrics_file.read_text())
    assert metrics["spectrum_rel_error"] >= 0 and metrics["wasserstein1"] >= 0
    assert json.loads(capsys.readouterr().out)["histogram_l1"] == metrics["histogram_l1"]


def test_train_job_file_runs_a_few_steps(tmp_path):
    out = tmp_path / "run"
    code = run("train", "--config", CONFIGS / "train.yaml", "--output", out, "--steps", 2, "--batch-size", 2,
               "--num-samples", 4, "--resolution", 8, "--checkpoint-every", 2, "--mode", "pynative", "--quiet")
    assert code == 0
    assert (out / "final" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "final" / "model_index.json").is_file()


def test_invert_and_reconstruct(model_dir, tmp_path, capsys):
    fields = tmp_path / "fields.npy"
    np.save(fields, np.random.default_rng(1).uniform(-0.5, 0.5, (2, 1, 8, 8)).astype(np.float32))
    latents, recon = tmp_path / "latents.npy", tmp_path / "recon.npy"
    assert run("invert", "--model", model_dir, "--input", fields, "--steps", 4, "--output", latents,
               "--reconstruct", recon, "--mode", "pynative", "--quiet") == 0
    assert np.load(latents).shape == (2, 1, 8, 8) and np.load(recon).shape == (2, 1, 8, 8)
    assert "reconstruction max abs error" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command,text,message",
    [
        ("sample", "compute_dtype: float64\n", "compute_dtype must be one of ['float32', 'float16'], got 'float64'"),
        ("sample", "quiet: maybe\n", "quiet must be true/false, yes/no or on/off, got 'maybe'"),
        ("train", "resume: 2\n", "resume must be true/false, yes/no or on/off, got 2"),
        ("sample", "seed: 1.5\n", "seed must be an integer, got 1.5"),
        ("sample", "batch_size: true\n", "batch_size must be a positive integer"),
        ("sample", "mode: eager\n", "mode must be one of ['graph', 'pynative']"),
        ("sample", "pipeline: heun\n", "pipeline must be one of"),
        ("train", "learning_rate: fast\n", "learning_rate must be a number"),
        ("sample", "config: other.yaml\n", "unknown key(s) ['config']"),
    ],
)
def test_job_file_values_are_checked_by_the_flags_parsers(command, text, message, tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(text)
    assert run(command, "--config", job) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_job_file_values_parse_like_flags(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("quiet: yes\nresume: 'off'\nlearning_rate: 2e-4\nsteps: '7'\nmodel_config:\n")
    opts = cli.parse(["train", "--config", str(job)])
    assert opts.quiet is True and opts.resume is False and opts.steps == 7
    assert opts.learning_rate == 2e-4 and opts.model_config is None  # YAML reads 2e-4 as text; empty = default
    assert cli.parse(["train", "--config", str(job), "--steps", "3"]).steps == 3


def test_one_table_builds_flags_job_keys_and_help_defaults():
    parser = cli.build_parser()
    for command in cli.COMMANDS:
        sub = parser._subparsers._group_actions[0].choices[command.name]
        flags = {a.dest: a for a in sub._actions if a.dest != "help"}
        assert sorted(flags) == sorted(o.name for o in command.options)
        assert command.job_file_keys() == [o.name for o in command.options if o.name != "config"]
        for option in command.options:
            assert option.flag in flags[option.name].option_strings
            if option.default is not None and not isinstance(option.default, bool):
                assert f"(default: {option.default})" in flags[option.name].help
        defaults = vars(cli.parse([command.name, *[a for o in command.options if o.required for a in (o.flag, "x")]]))
        assert all(defaults[o.name] == o.default for o in command.options if not o.required)
    for job in CONFIGS.glob("*.yaml"):  # every shipped job file uses keys the table declares
        command = cli._command("train" if job.stem == "train" else "sample")
        assert cli._read_job_file(str(job), command)


def test_a_bad_flag_is_one_error_line_and_status_2(capsys):
    assert run("sample", "--compute-dtype", "float64") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if "error:" in line] == [err[-1]] and "invalid choice" in err[-1]


TRAIN = ["--batch-size", 2, "--num-samples", 4, "--resolution", 8, "--mode", "pynative", "--quiet"]


@pytest.fixture
def eager_train_steps(monkeypatch):
    """The trainer's optimizer step run eagerly instead of through ``ms.jit``: the same Cell and
    the same numbers, without the 10-20 s compile per run. For the tests of what the command wires
    up (refusals, resume, condition sources, export); ``test_train_job_file_runs_a_few_steps`` and
    the Ctrl-C test keep the compiled step."""
    from mindscience_diffuser.training import DiffusionTrainer

    build = DiffusionTrainer.__init__

    def eager(self, *args, **kwargs):
        build(self, *args, **kwargs)
        self._compiled_step = self._step_cell

    monkeypatch.setattr(DiffusionTrainer, "__init__", eager)


def test_train_refuses_an_earlier_runs_checkpoints_unless_resume_or_overwrite(tmp_path, capsys, eager_train_steps):
    """A second run into the same --output would prune the first run's checkpoints: refused."""
    out = tmp_path / "run"
    assert run("train", "--output", out, "--steps", 2, "--checkpoint-every", 1, *TRAIN) == 0
    before = sorted(p.name for p in out.glob("checkpoint-*"))
    capsys.readouterr()
    assert run("train", "--output", out, "--steps", 3, "--checkpoint-every", 1, *TRAIN) == 2
    err = capsys.readouterr().err
    assert "already holds checkpoints" in err and "--resume" in err and "--overwrite" in err
    assert sorted(p.name for p in out.glob("checkpoint-*")) == before
    assert run("train", "--output", out, "--steps", 1, "--checkpoint-every", 1, "--overwrite", *TRAIN) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]


def test_resume_names_its_checkpoint_and_a_finished_run_says_so(tmp_path, capsys, eager_train_steps):
    out = tmp_path / "run"
    assert run("train", "--output", out, "--steps", 2, "--checkpoint-every", 2, *TRAIN) == 0
    capsys.readouterr()
    assert run("train", "--output", out, "--steps", 3, "--checkpoint-every", 2, "--resume", *TRAIN[:-1]) == 0
    printed = capsys.readouterr().out
    assert f"resuming from {out / 'checkpoint-2'} (step 2 of 3)" in printed and "trained 1 steps (3 to 3)" in printed
    assert run("train", "--output", out, "--steps", 2, "--resume", *TRAIN) == 0
    printed = capsys.readouterr().out
    assert f"nothing to train: {out / 'checkpoint-3'} is at step 3, --steps is 2" in printed
    assert "trained" not in printed


CTRL_C_SCRIPT = """
import os, signal, sys
from mindscience_diffuser import cli
from mindscience_diffuser.training import SyntheticFieldDataset
from mindscience_diffuser.training import DiffusionTrainer

step = DiffusionTrainer.train_step

def ctrl_c_at_step_3(self, batch, *args, **kwargs):
    loss = step(self, batch, *args, **kwargs)
    print("finished step", self.step, flush=True)
    if self.step == 3:
        os.kill(os.getpid(), signal.SIGINT)
    return loss

DiffusionTrainer.train_step = ctrl_c_at_step_3
sys.exit(cli.main(sys.argv[1:]))
"""


def test_ctrl_c_during_train_checkpoints_says_how_to_resume_and_exits_130(tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    out = tmp_path / "run"
    args = ["train", "--output", str(out), "--steps", "50", "--checkpoint-every", "100", *map(str, TRAIN)]
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 130, (result.returncode, result.stdout, result.stderr[-2000:])
    assert [line for line in result.stdout.splitlines() if line.startswith("finished")][-1] == "finished step 3"
    expected = f"stopped after step 3; checkpoint {out / 'checkpoint-3'}; resume with: mindscience-diffuser train"
    assert expected in result.stderr
    assert result.stderr.rstrip().endswith("--resume") and "Traceback" not in result.stderr


def test_outputs_are_checked_before_any_compute(model_dir, tmp_path, monkeypatch, capsys):
    def no_compute(*args, **kwargs):
        raise AssertionError("the pipeline was built before the outputs were checked")

    monkeypatch.setattr(cli, "_build_pipeline", no_compute)
    fields = tmp_path / "fields.npy"
    np.save(fields, np.zeros((2, 1, 8, 8), np.float32))
    missing = tmp_path / "no" / "such" / "raw.npy"
    cases = [
        (["sample", "--model", model_dir, "--output", tmp_path / "g.png", "--save-npy", missing],
         f"--save-npy {missing}: output folder does not exist"),
        (["sample", "--model", model_dir, "--output", tmp_path], f"--output {tmp_path} is a folder"),
        (["invert", "--model", model_dir, "--input", fields, "--output", tmp_path / "l.npy", "--reconstruct", missing],
         "--reconstruct"),
        (["evaluate", "--generated", fields, "--reference", fields, "--plot", tmp_path],
         f"--plot {tmp_path} is a folder"),
        (["convert", "--input", model_dir, "--output", tmp_path / "no" / "x.ckpt"], "output folder does not exist"),
    ]
    for args, message in cases:
        assert run(*args) == 2, args
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == "", (args, captured)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fields.npy"]


def test_a_command_writes_all_of_its_outputs_or_none(model_dir, tmp_path, monkeypatch, capsys):
    def failing_writer(array):
        def write(tmp):
            raise OSError(28, "No space left on device", str(tmp))

        return write

    monkeypatch.setattr(cli, "_npy_writer", failing_writer)
    png, raw = tmp_path / "g.png", tmp_path / "raw.npy"
    assert run("sample", "--model", model_dir, "--steps", 1, "--batch-size", 1, "--output", png, "--save-npy", raw,
               "--mode", "pynative", "--quiet") == 2
    err = capsys.readouterr().err
    assert str(raw) in err and ".tmp-" not in err  # the user's path, not the temporary's
    assert list(tmp_path.iterdir()) == []  # no PNG without its .npy, no temporaries


def test_outputs_get_the_users_umask(model_dir, tmp_path):
    previous = os.umask(0o022)
    try:
        png, raw, ckpt = tmp_path / "g.png", tmp_path / "raw.npy", tmp_path / "unet.ckpt"
        assert run("sample", "--model", model_dir, "--steps", 1, "--batch-size", 1, "--output", png, "--save-npy", raw,
                   "--mode", "pynative", "--quiet") == 0
        assert run("convert", "--input", model_dir, "--output", ckpt) == 0
    finally:
        os.umask(previous)
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in tmp_path.iterdir()} == {
        "g.png": "0o644", "raw.npy": "0o644", "unet.ckpt": "0o644"}


def test_evaluate_plot_works_with_the_plain_install(tmp_path, capsys):
    """The spectrum plot is drawn with pillow (an install requirement), not matplotlib."""
    from PIL import Image

    rng = np.random.default_rng(2)
    generated, reference = tmp_path / "gen.npy", tmp_path / "ref.npy"
    np.save(generated, rng.standard_normal((4, 1, 16, 16)).astype(np.float32))
    np.save(reference, rng.standard_normal((4, 1, 16, 16)).astype(np.float32) * 0.5)
    plot, metrics = tmp_path / "spectra.png", tmp_path / "metrics.json"
    code = run("evaluate", "--generated", generated, "--reference", reference, "--plot", plot, "--output", metrics)
    assert code == 0
    picture = np.asarray(Image.open(plot).convert("RGB"))
    assert picture.shape == (400, 560, 3) and metrics.is_file()
    red = (picture[..., 0] > 180) & (picture[..., 1] < 80)
    black = picture.sum(axis=-1) < 60
    assert red.sum() > 50 and black.sum() > 200  # both spectra, the axes and the text


@pytest.mark.parametrize("job,needs", [("sde_ve", "needs a Score-SDE-VE model"),
                                       ("consistency", "needs a consistency model")])
def test_a_job_file_for_another_model_kind_is_refused(job, needs, model_dir, tmp_path, capsys):
    """A VE or consistency sampler on the VP model wrote noise; now: exit 2, naming the model it needs."""
    out = tmp_path / "grid.png"
    assert run("sample", "--config", CONFIGS / f"{job}.yaml", "--model", model_dir, "--output", out, "--quiet") == 2
    err = capsys.readouterr().err
    assert needs in err and "DDIMScheduler model" in err and not out.exists()


def test_a_vp_sampler_on_a_ve_model_is_refused(model_dirs, tmp_path, capsys):
    assert run("sample", "--model", model_dirs["sde_ve"], "--pipeline", "ddim", "--output", tmp_path / "g.png") == 2
    assert "use --pipeline sde_ve" in capsys.readouterr().err


def test_swapping_the_sampler_converts_the_stored_config_quietly(model_dir, tmp_path, caplog):
    """DDIM's stored config has keys DPM-Solver does not take: they are dropped, not warned about."""
    with caplog.at_level("WARNING", logger="mindscience_diffuser"):
        assert run("sample", "--config", CONFIGS / "dpmsolver.yaml", "--model", model_dir, "--steps", 2,
                   "--batch-size", 1, "--output", tmp_path / "g.png", "--mode", "pynative", "--quiet") == 0
    assert not [r for r in caplog.records if "ignores config keys" in r.getMessage()]


def test_convert_a_ckpt_with_a_scheduler_config_into_a_pipeline_folder(model_dir, tmp_path):
    ckpt = tmp_path / "unet.ckpt"
    assert run("convert", "--input", model_dir, "--output", ckpt) == 0
    folder = tmp_path / "pipeline"
    assert run("convert", "--input", ckpt, "--output", folder, "--model-config", model_dir / "unet" / "config.json",
               "--scheduler-config", model_dir / "scheduler" / "scheduler_config.json") == 0
    pipe = msd.DiffusionPipeline.from_pretrained(folder)
    assert type(pipe).__name__ == "DDIMPipeline" and pipe.scheduler.config.num_train_timesteps == 100
    assert run("sample", "--model", folder, "--steps", 1, "--batch-size", 1, "--output", tmp_path / "g.png",
               "--mode", "pynative", "--quiet") == 0


def test_convert_a_ckpt_to_a_ckpt_path_writes_a_file(model_dir, tmp_path):
    ckpt, copy = tmp_path / "unet.ckpt", tmp_path / "checked.ckpt"
    assert run("convert", "--input", model_dir, "--output", ckpt) == 0
    assert run("convert", "--input", ckpt, "--output", copy, "--model-config", model_dir / "unet" / "config.json") == 0
    assert copy.is_file()
    import mindspore as ms

    original, checked = ms.load_checkpoint(str(ckpt)), ms.load_checkpoint(str(copy))
    assert sorted(original) == sorted(checked)
    assert all(np.array_equal(original[k].asnumpy(), checked[k].asnumpy()) for k in original)


# ---- conditional models ----------------------------------------------------------------------

def paired_npz(tmp_path, n=6):
    data = SyntheticFieldDataset("grf", num_samples=n, size=8, seed=1, vary={"spectrum": (1.5, 3.5)})
    path = tmp_path / "paired.npz"
    np.savez(path, fields=data.data, condition=data.condition, alpha_again=data.condition[:, 0])
    return path


def train_tiny(tmp_path, *args):
    return run("train", "--output", tmp_path / "run", "--steps", 2, "--batch-size", 2, "--num-samples", 4,
               "--resolution", 8, "--checkpoint-every", 2, "--mode", "pynative", "--quiet", *args)


@pytest.mark.parametrize("how", ["npz", "key", "file", "vary"])
def test_train_a_conditional_model_from_every_condition_source(how, tmp_path, eager_train_steps):
    """--data paired.npz (its condition array), --condition KEY of it, --condition FILE, and
    synthetic data with --vary all build a UNet with a vector projection of the condition; with
    --condition-dropout the exported folder records its null condition."""
    data = paired_npz(tmp_path)
    np.save(tmp_path / "alpha.npy", np.load(data)["condition"])
    plain = tmp_path / "plain.npy"
    np.save(plain, np.load(data)["fields"])
    args = {"npz": ["--data", data], "key": ["--data", data, "--condition", "alpha_again"],
            "file": ["--data", plain, "--condition", tmp_path / "alpha.npy"],
            "vary": ["--data", "synthetic:grf", "--vary", "spectrum=1.5:3.5"]}[how]
    assert train_tiny(tmp_path, *args, "--condition-dropout", 0.2) == 0
    final = tmp_path / "run" / "final"
    config = json.loads((final / "unet" / "config.json").read_text())
    assert (config["class_embed_type"], config["projection_class_embeddings_input_dim"]) == ("projection", 1)
    assert json.loads((final / "model_index.json").read_text())["_null_condition"] == "zeros"


@pytest.mark.parametrize("args,message", [
    (["--condition-dropout", "1"], "--condition-dropout: must be a probability in [0, 1)"),
    (["--condition", "missing.npy"], "--condition: data file not found"),
    (["--condition", "nokey"], "--condition: key must be one of"),
    (["--vary", "spectrum"], "--vary: must be NAME=LOW:HIGH"),
    (["--condition", "short.npy"], "condition must have one row per field (6)"),
])
def test_bad_conditional_training_input_exits_2(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "short.npy", np.ones((5, 1), np.float32))
    code = train_tiny(tmp_path, "--data", paired_npz(tmp_path), *args)
    err = capsys.readouterr().err.strip().splitlines()
    # one error line, the last (a bad flag value is preceded by the usage, as for every flag)
    assert code == 2 and [line for line in err if "error:" in line] == [err[-1]] and message in err[-1], err


def test_sample_condition_flags_are_checked_before_any_compute(model_dir, tmp_path, capsys):
    """An inline --condition that is not numbers, and a condition for an unconditional model: status 2, one line."""
    code = run("sample", "--model", model_dir, "--condition", "2.5,abc", "--output", tmp_path / "a.png")
    err = capsys.readouterr().err
    assert code == 2 and "--condition must be a .npy/.npz file" in err and len(err.strip().splitlines()) == 1
    code = run("sample", "--model", model_dir, "--condition", "2.5", "--steps", 2, "--output", tmp_path / "b.png")
    err = capsys.readouterr().err
    assert code == 2 and "condition" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b.png").exists()


def test_sample_a_conditional_model_with_guidance(tmp_path, capsys, eager_train_steps):
    """train on paired data with condition dropout, then sample with an inline condition and a
    guidance scale, and with a condition file: fields come out; guiding changes them."""
    assert train_tiny(tmp_path, "--data", paired_npz(tmp_path), "--condition-dropout", 0.2) == 0
    final = tmp_path / "run" / "final"
    outputs = {}
    for name, extra in (("plain", ["--condition", "2.0"]), ("guided", ["--condition", "2.0", "--guidance-scale", 3]),
                        ("file", ["--condition", tmp_path / "alpha.npy"])):
        np.save(tmp_path / "alpha.npy", np.full((3, 1), 2.0, np.float32))
        code = run("sample", "--model", final, "--batch-size", 3, "--steps", 2, "--mode", "pynative", "--quiet",
                   "--output", tmp_path / f"{name}.png", "--save-npy", tmp_path / f"{name}.npy", *extra)
        assert code == 0, capsys.readouterr().err
        outputs[name] = np.load(tmp_path / f"{name}.npy")
    assert outputs["plain"].shape == (3, 1, 8, 8)
    np.testing.assert_array_equal(outputs["plain"], outputs["file"])  # (d,) inline == (B, d) file of the same α
    assert not np.allclose(outputs["plain"], outputs["guided"])
    code = run("sample", "--model", final, "--steps", 2, "--output", tmp_path / "x.png")  # no condition
    err = capsys.readouterr().err
    assert code == 2 and "condition" in err
