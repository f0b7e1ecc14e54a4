"""The sampler exported as one MindIR file: loaded back with mindspore.load + nn.GraphCell (no
model built), it samples from a seed what the pipeline samples, and bad input fails cleanly."""
import os
import stat

import mindspore as ms
import numpy as np
import pytest

import mindscience_diffuser as msd
from mindscience_diffuser import cli
from mindscience_diffuser.pipelines.export import export_sampler, load_sampler, read_export_info


def tiny_unet(**kw):
    ms.set_seed(0)
    return msd.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
        **kw,
    )


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline(kind):
    if kind.startswith("ddim"):
        return quiet(msd.DDIMPipeline(tiny_unet(), msd.DDIMScheduler(num_train_timesteps=100)))
    algorithm = "sde-dpmsolver++" if kind == "dpm-sde" else "dpmsolver++"
    return quiet(msd.DPMSolverPipeline(tiny_unet(), msd.DPMSolverMultistepScheduler(num_train_timesteps=100,
                                                                                    algorithm_type=algorithm)))


CASES = {"ddim": {}, "ddim-eta": {"eta": 1.0}, "dpm": {}, "dpm-sde": {}}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_exported_sampler_samples_what_the_pipeline_samples(kind, tmp_path):
    # DDIM deterministic and stochastic (per-step noise is an input), DPM-Solver (state carried
    # through the loop: its history) deterministic and SDE.
    pipe, options = pipeline(kind), CASES[kind]
    path = export_sampler(pipe, tmp_path / "sampler.mindir", batch_size=2, num_inference_steps=3, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sampler.mindir"]  # one file, no leftovers
    sampler = load_sampler(path)
    assert (sampler.batch_size, sampler.sample_shape) == (2, (1, 8, 8))
    assert ("noise" in sampler.info["input_names"]) == (kind in ("ddim-eta", "dpm-sde"))
    for generator in (7, [np.random.default_rng([7, i]) for i in range(2)]):
        expected = pipe(batch_size=2, num_inference_steps=3, generator=generator, output_type="latent",
                        **options).images.asnumpy()
        if isinstance(generator, list):
            generator = [np.random.default_rng([7, i]) for i in range(2)]  # fresh streams
        np.testing.assert_allclose(sampler(generator), expected, rtol=1e-5, atol=1e-5)


def test_guided_conditional_sampler_keeps_the_scale_and_the_null_label(tmp_path):
    pipe = quiet(msd.DDIMPipeline(tiny_unet(num_class_embeds=4), msd.DDIMScheduler(num_train_timesteps=100)))
    pipe.null_condition = 3
    labels = np.array([0, 2], np.int32)
    call = dict(batch_size=2, num_inference_steps=2, class_labels=labels, guidance_scale=2.5)
    sampler = load_sampler(export_sampler(pipe, tmp_path / "guided.mindir", **call))
    assert sampler.info["input_names"] == ["latents", "class_labels"]
    expected = pipe(generator=4, output_type="latent", **call).images.asnumpy()
    np.testing.assert_allclose(sampler(4, class_labels=labels), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="class_labels: this sampler needs one of shape"):
        sampler(4)


def test_cli_export_writes_a_sampler_of_the_folder(tmp_path, capsys):
    folder = tmp_path / "model"
    pipeline("dpm").save_pretrained(folder)
    out = tmp_path / "s.mindir"
    assert cli.main(["export", "--model", str(folder), "--output", str(out), "--batch-size", "1", "--steps", "2",
                     "--scheduler-options", '{"algorithm_type": "sde-dpmsolver++"}']) == 0
    assert "wrote" in capsys.readouterr().out
    info = read_export_info(out)
    assert info["scheduler"] == "DPMSolverMultistepScheduler"
    assert info["scheduler_config"]["algorithm_type"] == "sde-dpmsolver++" and "noise" in info["input_names"]
    assert stat.S_IMODE(out.stat().st_mode) & stat.S_IWUSR  # not mindspore.export's read-only 0o400


@pytest.mark.parametrize("flag,value,message", [
    ("--batch-size", "0", "batch-size"),
    ("--model", "/no/such/model", "unet/config.json"),
    ("--output", "{tmp}/no/such/folder/s.mindir", "does not exist"),
    ("--output", "{tmp}/s.onnx", ".mindir"),
    ("--scheduler-options", "[1]", "scheduler-options"),
    ("--scheduler-options", '{"no_such_option": 1}', "no_such_option"),
])
def test_cli_export_bad_input_is_one_error_line(flag, value, message, tmp_path, capsys):
    folder = tmp_path / "model"
    pipeline("ddim").save_pretrained(folder)
    options = {"--model": str(folder), "--output": str(tmp_path / "s.mindir"), "--steps": "2"}
    options[flag] = value.replace("{tmp}", str(tmp_path))
    assert cli.main(["export"] + [text for pair in options.items() for text in pair]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_bad_arguments_are_named_and_leave_no_file(tmp_path):
    pipe = pipeline("ddim")
    with pytest.raises(ValueError, match="batch_size"):
        export_sampler(pipe, tmp_path / "s.mindir", batch_size=0)
    with pytest.raises(ValueError, match=r"\.mindir"):
        export_sampler(pipe, tmp_path / "s.bin")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_sampler(pipe, tmp_path / "missing" / "s.mindir")
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere
            with pytest.raises(PermissionError, match="cannot write"):
                export_sampler(pipe, locked / "s.mindir")
    finally:
        os.chmod(locked, 0o700)
    with pytest.raises(FileNotFoundError, match="no such MindIR file"):
        load_sampler(tmp_path / "none.mindir")
    (tmp_path / "junk.mindir").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a"):
        load_sampler(tmp_path / "junk.mindir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.mindir", "locked"]


def test_a_failed_export_leaves_no_file(tmp_path, monkeypatch):
    def broken(*args, file_name, **kwargs):
        with open(file_name, "wb") as handle:  # half written, then the compiler fails
            handle.write(b"partial")
        raise RuntimeError("compile failed")

    monkeypatch.setattr(ms, "export", broken)
    with pytest.raises(RuntimeError, match="compile failed"):
        export_sampler(pipeline("ddim"), tmp_path / "s.mindir", batch_size=1, num_inference_steps=2)
    assert list(tmp_path.iterdir()) == []


def test_field_output_uses_the_statistics_stored_at_export(tmp_path):
    pipe = pipeline("ddim")
    pipe.data_normalization = {"mean": [1.5], "std": [2.0]}
    sampler = load_sampler(export_sampler(pipe, tmp_path / "s.mindir", batch_size=1, num_inference_steps=2))
    expected = pipe(batch_size=1, num_inference_steps=2, generator=1, output_type="field").images.asnumpy()
    np.testing.assert_allclose(sampler(1, output_type="field"), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="output_type"):
        sampler(1, output_type="pil")


def test_the_loop_stays_rolled_in_the_file(tmp_path):
    # Ten times the steps gives the same graph (the while loop is exported as a loop, not as
    # copies of the model); only the schedule tables grow. Node counts, not file sizes: a second
    # export in one process writes longer internal names.
    from mindspore.train.mind_ir_pb2 import ModelProto

    def nodes(path):
        model = ModelProto()
        model.ParseFromString(path.read_bytes())
        return len(model.graph.node) + sum(len(f.node) for f in model.functions)

    pipe = pipeline("ddim")
    counts = [nodes(export_sampler(pipe, tmp_path / f"s{n}.mindir", num_inference_steps=n)) for n in (2, 20)]
    assert counts[0] == counts[1]
