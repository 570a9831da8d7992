"""cmrssl: self-supervised learning for cardiac MR cine, shared by the MONAI bundles.

Subpackages: ``io`` (cine readers, writers, geometry), ``data`` (dataset indexers,
phantom cohort), ``transforms``, ``networks``, ``losses``, ``metrics``, ``engines``.

Canonical labels everywhere: 0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity
(:mod:`cmrssl.labels` owns them).
"""

__version__ = "0.1.0"
