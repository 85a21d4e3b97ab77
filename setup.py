"""Packaging for monai_iqad: a MONAI plugin for medical image quality assessment and quality-aware diagnosis."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent

INSTALL_REQUIRES = [
    # torch first: a range that the CPU wheel (2.13.0) satisfies, so pip never swaps in a CUDA build.
    "torch>=2.8",
    "monai>=1.6",
    "pytorch-ignite>=0.5.2",  # SpearmanRankCorrelation / KendallRankCorrelation arrived in 0.5.2
    "numpy>=1.24",  # numpy 1.26 (MONAI Label install) and 2.x are both supported
    "scipy>=1.10",  # logistic fit for PLCC, correlations, image filters for degradations
    "pillow>=10",
    "nibabel>=5",
    "pydicom>=2.4",  # pydicom 2.4 (MONAI Label install) and 3.x are both supported
    # itk is NOT here: about 1.5 GB, and only IQADImageReader's MetaImage/NRRD path uses it -> the [itk] extra
    "tensorboard>=2.14",
    "scikit-learn>=1.3",  # macro one-vs-one ROC AUC and F1 (MONAI's ROCAUC is one-vs-rest only)
    "scikit-image>=0.22",  # real natural/fundus images for the demo data, NLM denoising for distortions
    "matplotlib>=3.7",  # TensorBoard figures: scatter with logistic fit, ROC curves, confusion matrices
    "fire>=0.4",  # the `python -m monai.bundle` command line
    "tqdm>=4.60",  # console progress bars (Ignite's ProgressBar)
    "PyYAML>=6",  # `python -m monai.bundle download_large_files` reads large_files.yml; YAML bundle configs
    # `python -m monai.bundle verify_metadata` (every bundle README). >=3.2, not >=4: monailabel's pydicom-seg pins
    # jsonschema<4, and MONAI accepts any version (4.x also checks the schema's draft 2019-09 keywords).
    "jsonschema>=3.2",
]

EXTRAS = {
    # real medical DICOM images (chest CR, CT, ultrasound) used to build the demo data sets (CXR/CT/US demos)
    "demo": ["pydicom-data>=1.0"],
    # the second held-out IQA set (`pretrain-corpus OUT --preset test2`): dipy's wheel ships a real T1 brain slice
    "heldout": ["pydicom-data>=1.0", "dipy>=1.10"],
    # MetaImage (.mha/.mhd) and NRRD through MONAI's ITKReader in monai_iqad.data.IQADImageReader
    "itk": ["itk>=5.3"],
    # `python -m monai.bundle onnx_export` (torch.onnx's dynamo exporter needs onnxscript) and ONNX Runtime checks
    "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1"],
    # MONAI Label server (`monai-iqad label start`); its own dependencies are large (sam2, torchvision):
    # scripts/install_monailabel.sh is the light CPU install. pydicom<3: monailabel 0.8.5 imports pydicom_seg.
    "label": ["monailabel==0.8.5", "pydicom>=2.4.4,<3", "numpy<2"],
    # ruff is pinned: lint and format results must not change under CI
    # pypiqe (MIT): PIQE parity test of monai_iqad.metrics.piqe (it pulls in opencv-python)
    "test": ["pytest>=7", "ruff==0.17.6", "pydicom-data>=1.0", "pypiqe==1.2"],
}
# everything except the MONAI Label server, which needs numpy<2 / pydicom<3 (its own environment)
EXTRAS["all"] = sorted({r for k, v in EXTRAS.items() if k != "label" for r in v})

setup(
    name="monai_iqad",
    version="0.1.0",
    description="MONAI plugin for medical image quality assessment (SAQM) and image-quality-aware diagnosis (MKCNet)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license_expression="Apache-2.0",  # SPDX expression (PEP 639); no license classifier
    license_files=["LICENSE"],
    python_requires=">=3.10",
    # namespace discovery: data folders without __init__.py (e.g. metrics/data) are packages too, so setuptools does
    # not warn "Package would be ignored" on install
    packages=find_namespace_packages(include=["monai_iqad", "monai_iqad.*"], exclude=["*.__pycache__"]),
    # flat layout declared: `pip install -e .` then uses a plain .pth entry and prints no "Editable installation" notice
    package_dir={"": "."},
    include_package_data=True,
    package_data={"monai_iqad": ["py.typed", "label/app/*.json", "metrics/data/*.npz", "metrics/data/*.md"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["monai-iqad=monai_iqad.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
        "Topic :: Scientific/Engineering :: Image Processing",
    ],
)
