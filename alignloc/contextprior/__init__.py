"""The context-prior experiment: interventions against context-ignoring priors."""
