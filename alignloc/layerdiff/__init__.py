"""layer-diff: compare a base and a post-trained model layer by layer (collect -> measure -> verdict -> report)."""
