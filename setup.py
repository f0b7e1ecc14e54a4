"""mindscience_diffuser: MindSpore-native diffusion schedulers, UNet and compiled pipelines."""
from setuptools import find_packages, setup

setup(
    name="mindscience_diffuser",
    version="0.1.0",
    description=(
        "MindSpore-native diffusion toolkit: diffusers-exact schedulers, UNet2DModel and graph-compiled pipelines"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9,<3.12",
    packages=find_packages(include=["mindscience_diffuser", "mindscience_diffuser.*"]),
    package_data={"mindscience_diffuser": [f"{model}/{pattern}" for model in ("default_model", "grf_slope_model")
                                           for pattern in ("*.json", "*/*.json", "*/*.safetensors")]
                  # compiled on first use by models/cpu_kernels.py
                  + ["models/kernels/*.cc", "models/kernels/*.h"]},
    install_requires=[
        # 2.9 and 2.10 run CPU convolution over 100x slower; see README.
        "mindspore>=2.7.1,<2.9",
        # MindSpore's wheels import-fail on numpy 2 without declaring it.
        "numpy>=1.22,<2",
        "pillow",
        "tqdm",
        "safetensors",
        "pyyaml",
    ],
    extras_require={
        # Two workers: PyNative dispatch is single-threaded, so the suite runs ~2x faster on 2 cores.
        # ruff: the lint step CI runs before the tests (configuration in ruff.toml).
        "test": ["pytest", "pytest-xdist", "ruff>=0.6,<1"],
        # Reference stack for golden values and benchmarks only; never needed to run the tests.
        "ref": ["torch==2.13.0", "diffusers==0.42.1", "scipy", "matplotlib"],
    },
    entry_points={"console_scripts": ["mindscience-diffuser=mindscience_diffuser.cli:main"]},
)
