"""The contracts between slapp's steps, in modules that no command owns.

- :mod:`slapp.contracts.manifest`: the segmentation manifest (its entries,
  how it is read, the default bin size, where the plots go);
- :mod:`slapp.contracts.movie`: the HDF5 movie a manifest entry points at;
- :mod:`slapp.contracts.ground_truth`: the ground-truth cell masks a
  segmentation is scored against.

A command that writes one of these files and the commands that read it import
the contract from here, so neither depends on the other.
"""
