"""Whole experiments: the top room of the library, below only the command line.

Each module here runs one experiment end to end (loads the models, measures through the rooms
below, hands the results to ``alignloc.report`` to render): ``layerdiff`` (one pair, layer by
layer), ``trajectory`` (layer-diff along a chain of checkpoints), ``surfacing``, ``localize_bench``,
``contextprior``, ``proxytune``, ``rlformats`` and ``paper`` (every zoo experiment the figures need).
The rooms below never import this one; ``report`` only renders what these write.

Importing the package imports ``alignloc.zoo`` (light), which registers ``zoo:NAME`` references.
"""

import alignloc.zoo  # noqa: F401 (registers zoo:NAME references: experiments run on organisms)
