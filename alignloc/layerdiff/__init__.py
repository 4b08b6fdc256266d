"""layer-diff: compare a base and a post-trained model layer by layer (collect -> measure); the verdict is
``analyses.verdict``, the whole run ``alignloc.experiments.layerdiff``."""
