"""A list of generators, one per sample: sample i's latents and every step's noise come from
generator i alone, so a sample is the same whatever batch it is drawn in."""
import numpy as np
import pytest

import mindscience_diffuser as msd
from mindscience_diffuser.utils import as_batch_generator


def tiny_unet():
    return msd.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )


def streams(seed, indices):
    return [np.random.default_rng([seed, i]) for i in indices]


@pytest.fixture(scope="module")
def ddim():
    pipe = msd.DDIMPipeline(tiny_unet(), msd.DDIMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_each_sample_comes_from_its_own_generator(ddim):
    # eta = 1: every step draws noise, so the per-step draws are checked too, not only the latents.
    def run(generator, batch_size):
        return ddim(batch_size=batch_size, num_inference_steps=3, eta=1.0, generator=generator,
                    output_type="latent").images.asnumpy()

    together = run(streams(5, range(3)), 3)
    for i in range(3):
        alone = run(streams(5, [i]), 1)
        np.testing.assert_allclose(together[i:i + 1], alone, rtol=1e-5, atol=1e-6)


def test_one_generator_in_a_list_is_that_generator(ddim):
    a = ddim(batch_size=1, num_inference_steps=2, eta=1.0, generator=[np.random.default_rng(3)], output_type="latent")
    b = ddim(batch_size=1, num_inference_steps=2, eta=1.0, generator=np.random.default_rng(3), output_type="latent")
    np.testing.assert_array_equal(a.images.asnumpy(), b.images.asnumpy())


def test_per_step_noise_is_drawn_per_sample_along_the_batch_axis():
    rng = as_batch_generator(streams(0, range(2)), 2)
    noise = rng.standard_normal((4, 2, 3), batch_axis=1)
    for i, g in enumerate(streams(0, range(2))):
        np.testing.assert_array_equal(noise[:, i], g.standard_normal((4, 3)))
    labels = as_batch_generator(streams(0, range(3)), 3).integers(0, 10, size=3)
    assert labels.shape == (3,) and labels.tolist() == [int(g.integers(0, 10)) for g in streams(0, range(3))]


def test_a_list_of_the_wrong_length_is_a_value_error(ddim):
    with pytest.raises(ValueError, match="generator.*batch_size=3.*got 2"):
        ddim(batch_size=3, num_inference_steps=2, generator=streams(0, range(2)))
    with pytest.raises(TypeError, match="generator"):
        ddim(batch_size=1, num_inference_steps=2, generator=["seed"])
