"""The multi-task ideas the notebooks teach: which tasks train when, and how losses combine.
Dropped Scheduled Task and the loss and gradient weightings, independent of any loop.

* :mod:`mtlkit.methods.dst` -- DST's metrics, keep probabilities and per-epoch gates;
* :mod:`mtlkit.methods.cores` -- the weightings' and gradient methods' pure functions of
  ``keras.ops`` (weights, coefficients, combined gradients), and the loop's helpers for them;
* :mod:`mtlkit.methods.weighting` -- the method objects around them: UW, DWA, RLW, PCGrad,
  MGDA-UB, GradNorm; FAMO, IMTL-G, CAGrad, Nash-MTL, Aligned-MTL (``weighting.get``).
"""
