"""RL format amplification: does RL with a correctness-only reward collapse onto one pretraining format?"""
