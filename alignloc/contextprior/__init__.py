"""Context against prior: the prompt groups (``data``), the rates and recipes they are measured with
(``evaluate``) and head attribution (``heads``); the experiment is ``alignloc.experiments.contextprior``."""
