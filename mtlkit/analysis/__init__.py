"""Reading results: metrics and the noise rule, Delta_p, task interference, published numbers.
Nothing here trains; everything takes finished models, histories or result tables.

* :mod:`mtlkit.analysis.evaluation` -- metrics, seed tables and the noise rule;
* :mod:`mtlkit.analysis.comparison` -- Delta_p against single-task models, costs;
* :mod:`mtlkit.analysis.diagnostics` -- task gradients, their conflicts, GradientProbe;
* :mod:`mtlkit.analysis.published` -- the reports' and papers' numbers, typed once.
"""
