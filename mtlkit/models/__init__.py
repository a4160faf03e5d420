"""Multi-task models: the architectures the notebooks compare, and what can be read off them.
Builders, the tasks' losses, the walk of a model's graph, and what the tasks share.

* :mod:`mtlkit.models.architectures` -- one builder per architecture diagram;
* :mod:`mtlkit.models.tasks` -- per-task names, losses, masked losses and meters;
* :mod:`mtlkit.models.graph` -- task depths, the shared representation, diagram blocks;
* :mod:`mtlkit.models.sharing` -- the variables two or more tasks reach (by their gradients).
"""
