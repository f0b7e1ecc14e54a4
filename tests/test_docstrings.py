"""Every public class documents every constructor argument in its docstring's ``Args:`` section."""
import inspect
import pydoc

import pytest

import mindscience_diffuser
from mindscience_diffuser import docstrings

#: Public classes with no Python signature to check, and why (none today: a class listed here
#: must really have no signature, see test_skipped_classes_have_no_signature).
SKIPPED = {}

CLASSES = docstrings.public_classes(vars(mindscience_diffuser))


def _signature_or_none(cls):
    try:
        return docstrings.documented_parameters(cls)
    except (TypeError, ValueError):
        return None


WITH_ARGUMENTS = [cls for cls in CLASSES if cls.__name__ not in SKIPPED and _signature_or_none(cls)]


def test_the_public_classes_are_found():
    names = {cls.__name__ for cls in WITH_ARGUMENTS}
    assert {"DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "DPMSolverMultistepInverseScheduler",
            "EulerDiscreteScheduler", "ScoreSdeVeScheduler", "CMStochasticIterativeScheduler", "UNet2DModel",
            "DDIMPipeline", "DiffusionTrainer", "SchedulerOutput"} <= names


def test_every_class_without_a_signature_is_skipped_by_name():
    unexplained = [cls.__name__ for cls in CLASSES if _signature_or_none(cls) is None
                   and cls.__name__ not in SKIPPED]
    assert not unexplained, f"classes with no Python signature must be listed in SKIPPED with a reason: {unexplained}"


def test_skipped_classes_have_no_signature():
    for name in SKIPPED:
        cls = getattr(mindscience_diffuser, name)
        assert _signature_or_none(cls) is None, f"{name} has a signature: document it instead of skipping it"


@pytest.mark.parametrize("cls", WITH_ARGUMENTS, ids=lambda c: c.__name__)
def test_every_constructor_argument_is_in_args(cls):
    described = docstrings.parse_args_section(cls.__doc__)
    names = [p.name for p in docstrings.documented_parameters(cls)]
    missing = [name for name in names if name not in described]
    assert not missing, f"{cls.__name__}: Args: section lacks {missing}"
    empty = [name for name in names if not described[name]]
    assert not empty, f"{cls.__name__}: empty descriptions for {empty}"


@pytest.mark.parametrize("cls", WITH_ARGUMENTS, ids=lambda c: c.__name__)
def test_generated_defaults_match_the_signature(cls):
    described = docstrings.parse_args_section(cls.__doc__)
    own = docstrings.parse_args_section(cls.__dict__.get("__doc__"))
    for param in docstrings.documented_parameters(cls):
        text = described[param.name]
        if "Default:" not in text and "Required." not in text:
            continue  # written by hand in the class docstring
        assert own is described or param.name in own
        if param.default is param.empty:
            assert text.endswith("Required."), (cls.__name__, param.name, text)
        else:
            assert text.endswith(f"Default: {docstrings._format_default(param.default)}."), (cls.__name__, param.name)


def test_help_of_ddim_explains_steps_offset():
    text = pydoc.render_doc(mindscience_diffuser.DDIMScheduler, renderer=pydoc.plaintext)
    args = text[text.index("Args:"):]
    assert "steps_offset: " in args
    assert "timestep_spacing=\"leading\"" in docstrings.parse_args_section(
        mindscience_diffuser.DDIMScheduler.__doc__)["steps_offset"]
    assert "compute_dtype: " in args and "mindspore.float16" in args


def test_args_section_comes_before_the_example():
    doc = inspect.getdoc(mindscience_diffuser.DDIMScheduler)
    assert doc.index("Args:") < doc.index("Example:")


def test_an_argument_without_a_description_is_an_error(monkeypatch):
    class Fresh:
        """A class with a new option.

        Example:
            >>> 1
            1
        """

        def __init__(self, num_train_timesteps=7, brand_new_option=3, **kwargs):
            pass

    with pytest.raises(KeyError, match="brand_new_option"):
        docstrings.document_arguments(Fresh)
    monkeypatch.setitem(docstrings.ARGUMENTS, "brand_new_option", "what it does.")
    docstrings.document_arguments(Fresh)
    described = docstrings.parse_args_section(Fresh.__doc__)
    assert described == {"num_train_timesteps": docstrings.ARGUMENTS["num_train_timesteps"] + " Default: ``7``.",
                         "brand_new_option": "what it does. Default: ``3``."}
    assert Fresh.__doc__.index("Args:") < Fresh.__doc__.index("Example:")
    before = Fresh.__doc__
    docstrings.document_arguments(Fresh)
    assert Fresh.__doc__ == before  # idempotent


def test_overrides_win_over_the_table():
    @docstrings.document_arguments(overrides={"steps_offset": "a special meaning."})
    class Special:
        def __init__(self, steps_offset=2):
            pass

    assert docstrings.parse_args_section(Special.__doc__) == {"steps_offset": "a special meaning. Default: ``2``."}
