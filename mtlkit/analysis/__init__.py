"""Reading results: metrics and the noise rule, Delta_p, task interference, published numbers.
Nothing here trains; everything takes finished models, histories or result tables.

* :mod:`mtlkit.analysis.scoring` -- one model's scores: per-attribute metrics, majority baselines;
* :mod:`mtlkit.analysis.across_seeds` -- runs over seeds: seed tables, the noise rule, mean rank;
* :mod:`mtlkit.analysis.comparison` -- Delta_p against single-task models, costs;
* :mod:`mtlkit.analysis.diagnostics` -- task gradients, their conflicts, GradientProbe;
* :mod:`mtlkit.analysis.published` -- the reports' and papers' numbers, typed once.
"""
