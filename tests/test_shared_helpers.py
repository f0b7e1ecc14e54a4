"""The helpers every module shares: the argument check."""
import math

import numpy as np
import pytest

from mindscience_diffuser.utils import ArgumentTypeError, check_positive

# ---- check_positive ----------------------------------------------------------------------------


@pytest.mark.parametrize("value,kind,expected", [
    (3, {}, 3.0),
    (np.float32(0.5), {}, 0.5),
    (np.int64(4), {"integer": True}, 4),
    (0, {"allow_zero": True}, 0.0),
    (0, {"integer": True, "allow_zero": True}, 0),
    (2, {"integer": True, "minimum": 2}, 2),
])
def test_check_positive_accepts_and_normalises(value, kind, expected):
    result = check_positive("x", value, **kind)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("value,kind,allowed", [
    ("3", {}, "a positive number"),
    (None, {}, "a positive number"),
    (True, {}, "a positive number"),
    (2.0, {"integer": True}, "a positive int"),
    (np.float64(2), {"integer": True, "allow_zero": True}, "a non-negative int"),
])
def test_check_positive_wrong_type_is_a_type_error_naming_the_argument(value, kind, allowed):
    with pytest.raises(TypeError, match=f"^steps must be {allowed}, got {type(value).__name__}") as err:
        check_positive("steps", value, **kind)
    # Also a ValueError: callers that caught the ValueError of the former checks still do.
    assert isinstance(err.value, ArgumentTypeError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("value,kind,allowed", [
    (0, {}, "a positive number"),
    (-1, {"integer": True}, "a positive int"),
    (-0.5, {"allow_zero": True}, "a non-negative number"),
    (math.nan, {}, "a positive number"),
    (1, {"integer": True, "minimum": 2}, "an int >= 2"),
])
def test_check_positive_wrong_value_is_a_value_error(value, kind, allowed):
    with pytest.raises(ValueError, match=f"^rate must be {allowed}, got") as err:
        check_positive("rate", value, **kind)
    assert not isinstance(err.value, TypeError)


def test_every_former_copy_uses_the_one_policy():
    """Pipelines, UNet config and field generators: a float where an int belongs
    is a TypeError (that is also a ValueError), a zero is a ValueError."""
    from mindscience_diffuser.models import UNet2DModel
    from mindscience_diffuser.pipelines.pipeline_utils import check_positive_int
    from mindscience_diffuser.training import gaussian_random_field

    calls = [
        lambda v: check_positive_int("num_inference_steps", v),
        lambda v: UNet2DModel(layers_per_block=v),
        lambda v: gaussian_random_field(v),
    ]
    for call in calls:
        with pytest.raises(ArgumentTypeError):
            call(2.5)
        with pytest.raises(ValueError) as err:
            call(0)
        assert not isinstance(err.value, TypeError)
