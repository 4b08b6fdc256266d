"""Loading models and pairs, their site tables, scoped hooks and backends."""

from alignloc.models.pair import LoadedModel, ModelPair, PairMismatchError, load_model, load_pair
from alignloc.models.refs import ModelRefError

__all__ = ["LoadedModel", "ModelPair", "ModelRefError", "PairMismatchError", "load_model", "load_pair"]
