"""Dataset readers and small-data generators (no LibMTL import).

* :mod:`~libmtl_repmtl.data.dense`: ``NYUv2Dataset`` / ``CityscapesDataset`` (preprocessed ``.npy`` layouts,
  items ``(image (3,H,W), {task: target})``) and ``RandomScaleCrop`` (the NYUv2 augmentation).
* :mod:`~libmtl_repmtl.data.office`: ``OfficeDataset`` (Office-31 / Office-Home, one domain and split, items
  ``(image (3,224,224), label)``), ``office_domains``, the split lists shipped in ``office_lists/``.
* :mod:`~libmtl_repmtl.data.synthetic`: ``generate(kind, out, ...)`` and
  ``python -m libmtl_repmtl.data.synthetic KIND OUT``: small datasets in exactly those layouts.
* :mod:`~libmtl_repmtl.data.multimnist`: the MultiMNIST / digit-domain CPU benchmarks.

Import the submodules directly; this package imports nothing so that ``import libmtl_repmtl.data`` stays cheap.
"""
