"""Drop-in compatibility with diffusers' scheduler API, against what diffusers 0.42.1 does
(``tests/golden/compat.json``, written by ``tools/gen_compat_golden.py``): configs moving between
classes keep their hidden keys, ``compatibles``, ``set_timesteps(device=...)``, ``(1,)``
timesteps, the ``return_dict=False`` tuples, and the error for an underflowing schedule."""
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import mindscience_diffuser as msd

GOLDEN = json.loads((Path(__file__).parent / "golden" / "compat.json").read_text())
CLASSES = sorted(GOLDEN["compatibles"])


@pytest.mark.parametrize("chain", sorted(GOLDEN["chains"]))
def test_a_config_moving_through_other_classes_keeps_what_diffusers_keeps(chain, caplog):
    spec = GOLDEN["chains"][chain]
    names = spec["classes"]
    scheduler = getattr(msd, names[0])(**spec["options"])
    with caplog.at_level("WARNING", logger="mindscience_diffuser"):
        for name in names[1:]:
            scheduler = getattr(msd, name).from_config(scheduler.config)
    # The keys of compatible classes travel quietly.
    assert "ignores config keys" not in caplog.text
    ours = {k: (list(v) if isinstance(v, tuple) else v) for k, v in scheduler.config.items()}
    assert ours == spec["config"]


def test_the_standard_swap_works_both_ways_between_ddpm_and_dpm_solver(tmp_path):
    ddpm = msd.DDPMScheduler(variance_type="fixed_small")
    dpm = msd.DPMSolverMultistepScheduler.from_config(ddpm.config)
    dpm.set_timesteps(5)
    back = msd.DDPMScheduler.from_config(msd.DPMSolverMultistepScheduler().config)  # variance_type None
    back.set_timesteps(5)
    x = Tensor(np.ones((1, 1, 4, 4), np.float32))
    reference = msd.DDPMScheduler()
    reference.set_timesteps(5)
    t = int(back.timesteps[0])
    ours, theirs = back.step(0.1 * x, x, t, generator=0), reference.step(0.1 * x, x, t, generator=0)
    np.testing.assert_array_equal(ours.asnumpy(), theirs.asnumpy())
    dpm.save_config(tmp_path)
    assert json.loads((tmp_path / "scheduler_config.json").read_text())["variance_type"] == "fixed_small"


@pytest.mark.parametrize("name", CLASSES)
def test_compatibles_are_diffusers_compatibles_that_the_package_has(name):
    scheduler = getattr(msd, name)()
    assert sorted(c.__name__ for c in scheduler.compatibles) == GOLDEN["compatibles"][name]
    assert all(issubclass(c, msd.SchedulerBase) for c in scheduler.compatibles)


@pytest.mark.parametrize("name", CLASSES)
def test_set_timesteps_takes_a_device_and_ignores_it(name):
    scheduler = getattr(msd, name)()
    scheduler.set_timesteps(4, device="cpu")
    reference = getattr(msd, name)()
    reference.set_timesteps(4)
    np.testing.assert_array_equal(np.asarray(scheduler.timesteps), np.asarray(reference.timesteps))


@pytest.mark.parametrize("name", CLASSES)
def test_a_one_element_timestep_broadcasts_over_the_batch_in_add_noise(name):
    scheduler = getattr(msd, name)()
    scheduler.set_timesteps(4)
    if name == "ScoreSdeVeScheduler":
        scheduler.set_sigmas(4)
        t = np.array([2])
    else:
        t = np.asarray(scheduler.timesteps)[1:2]
    rng = np.random.default_rng(0)
    x0, noise = (Tensor(rng.standard_normal((3, 2, 4, 4)).astype(np.float32)) for _ in range(2))
    one = scheduler.add_noise(x0, noise, Tensor(t))
    each = scheduler.add_noise(x0, noise, Tensor(np.repeat(t, 3)))
    assert one.shape == (3, 2, 4, 4)
    np.testing.assert_array_equal(one.asnumpy(), each.asnumpy())


@pytest.mark.parametrize("name", sorted(GOLDEN["step_tuple_lengths"]))
def test_return_dict_false_gives_diffusers_tuple(name):
    cls_name, _, method = name.partition(".")
    scheduler = getattr(msd, cls_name)()
    scheduler.set_timesteps(3)
    x = Tensor(np.ones((1, 1, 4, 4), np.float32))
    t = scheduler.timesteps[0]
    if cls_name == "ScoreSdeVeScheduler":
        scheduler.set_sigmas(3)
        if method == "step_pred":
            out = scheduler.step_pred(x, x, float(t), generator=0, return_dict=False)
        else:
            out = scheduler.step_correct(x, x, generator=0, return_dict=False)
    else:
        t = float(t) if cls_name in ("EulerDiscreteScheduler", "CMStochasticIterativeScheduler") else int(t)
        out = scheduler.step(0.1 * x, x, t, generator=0, return_dict=False)
    assert isinstance(out, tuple) and len(out) == GOLDEN["step_tuple_lengths"][name]
    assert all(isinstance(v, Tensor) for v in out)


@pytest.mark.parametrize(
    "name", ["DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler"]
)
def test_an_alpha_bar_that_underflows_is_named_as_such(name):
    """betas 0.01 -> 0.2 over 1000 steps: alpha_cumprod reaches 0 in float32 long before T."""
    # trailing spacing reaches t = 999
    options = dict(beta_start=0.01, beta_end=0.2, beta_schedule="linear", timestep_spacing="trailing")
    with pytest.raises(ValueError, match="underflows to 0 in float32 from training timestep") as err:
        getattr(msd, name)(**options).set_timesteps(10)
    assert "rescale_betas_zero_snr" not in str(err.value)
    if name in ("DDIMScheduler", "DDPMScheduler"):
        # Without an epsilon division the schedule is usable: no error for v-prediction.
        getattr(msd, name)(**options, prediction_type="v_prediction").set_timesteps(10)


@pytest.mark.parametrize("case", sorted(GOLDEN["before_set_timesteps"]))
def test_stepping_before_set_timesteps_does_what_diffusers_does(case):
    """DDPM, Euler and consistency models walk their training schedule; DDIM and DPM-Solver raise."""
    golden = GOLDEN["before_set_timesteps"][case]
    scheduler = getattr(msd, case.split("-")[0])(**golden["options"])
    np.testing.assert_allclose(np.asarray(scheduler.timesteps, np.float64), golden["timesteps"], rtol=1e-6)
    shape = (2, 1, 4, 4)
    if golden["raises"]:
        x = ms.Tensor(np.zeros(shape, np.float32))
        with pytest.raises(ValueError, match="before set_timesteps"):
            scheduler.step(x, x, scheduler.timesteps[0])
        return
    integer = isinstance(scheduler, msd.DDPMScheduler)
    x = ms.Tensor(np.reshape(golden["sample"], shape).astype(np.float32))
    model_output = ms.Tensor(np.reshape(golden["model_output"], shape).astype(np.float32))
    for entry in golden["walk"]:
        index = entry["index"]
        if index > 2 and not integer:
            scheduler._step_index = index
        t = scheduler.timesteps[index]
        t = int(t) if integer else float(t)
        scaled = scheduler.scale_model_input(x, t)
        np.testing.assert_allclose(scaled.asnumpy().reshape(-1), entry["scaled"], rtol=1e-5, atol=1e-6)
        noise = ms.Tensor(np.reshape(entry["noise"], shape).astype(np.float32))
        x = scheduler.step(model_output, x, t, variance_noise=noise)
        np.testing.assert_allclose(x.asnumpy().reshape(-1), entry["prev_sample"], rtol=1e-5, atol=1e-6,
                                   err_msg=f"step at training index {index}")
    assert scheduler.num_inference_steps is None


@pytest.mark.parametrize("pipeline", [cls.__name__ for cls in msd.pipelines.PIPELINES])
def test_every_pipeline_folder_names_a_pipeline_class_diffusers_has(pipeline, tmp_path):
    from mindscience_diffuser.pipelines.pipeline_utils import model_index

    assert GOLDEN["pipelines"][model_index(pipeline, {})["_class_name"]]


def test_the_default_model_samples_the_same_as_a_ddpm_folder_and_as_dpm_solver():
    """Its folder says DDPMPipeline (a class diffusers has) and stores the DPM-Solver it was measured with."""
    by_folder = msd.DiffusionPipeline.from_pretrained(msd.DEFAULT_MODEL_PATH)
    by_class = msd.DPMSolverPipeline.from_pretrained(msd.DEFAULT_MODEL_PATH)
    assert type(by_folder) is msd.DDPMPipeline and isinstance(by_folder.scheduler, msd.DPMSolverMultistepScheduler)
    outputs = []
    for pipe in (by_folder, by_class):
        pipe.set_progress_bar_config(disable=True)
        outputs.append(pipe(batch_size=1, num_inference_steps=3, generator=0, output_type="latent").images.asnumpy())
    np.testing.assert_array_equal(outputs[0], outputs[1])
