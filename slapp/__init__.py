"""slapp: select, manifest and segment two-photon imaging experiments."""
__version__ = "0.1.0"
