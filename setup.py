"""pdistill: pre-training distillation at data-lake scale (Beam teacher pass + Composer students).

Beam ships this file to workers with --setup_file, so it declares the three top-level packages and
the extras split by role (a Dataflow worker image may move to a newer Beam than the trainer's).
Exact versions that resolve together live in constraints.txt (pip install -c constraints.txt).
"""

from setuptools import find_packages, setup

CORE = [
    "numpy>=1.26,<2.2",  # mosaicml-streaming 0.13 pins numpy<2.2
    "pyyaml>=6",
    "fsspec>=2024.6",
    "zstandard>=0.22",
    "constriction==0.5.0",  # compact2's ANS coder; pinned: its fixed-point models are the bitstream
]
STORAGE = ["gcsfs", "s3fs"]  # fsspec back ends for gs:// and s3://
TORCH = ["torch==2.7.0"]  # Composer 0.32.1 pins torch>=2.6,<2.7.1
HF = ["transformers>=4.45,<5", "safetensors", "accelerate"]
STREAMING = ["mosaicml-streaming==0.13.0"]
SETTINGS = ["pydantic>=2.6,<3"]  # both sides' settings are typed models (trainer/config.py, pipelines/config.py)

EXTRAS = {
    "pipeline": ["apache-beam[gcp]==2.71.0", "crcmod", "pyarrow>=17", "tqdm"]
    + TORCH
    + HF
    + STREAMING
    + STORAGE
    + SETTINGS,
    "trainer": ["mosaicml==0.32.1", "torchvision==0.22.0"] + TORCH + HF + STREAMING + STORAGE + SETTINGS,
    "demo": ["gguf>=0.10", "matplotlib>=3.8", "pyarrow>=17", "tqdm"],
    "test": [
        "pytest>=8",
        "pytest-timeout",
        "hypothesis>=6.100",
        "moto[server]>=5",
        "gcp-storage-emulator",
        "python-hcl2",
        "ruff",  # lint + format check, run by `make test` (ruff.toml)
    ],
}
EXTRAS["dev"] = sorted({r for k in ("pipeline", "trainer", "demo", "test") for r in EXTRAS[k]})

setup(
    name="pdistill",
    version="0.1.0",
    description="Pre-training distillation of LLMs at data-lake scale: Beam teacher pass, MDS shards, Composer students",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["schemas*", "pipelines*", "trainer*", "pdistill*"]),
    package_data={"trainer": ["configs/*.yaml"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["pdistill=pdistill.cli:main"]},
)
