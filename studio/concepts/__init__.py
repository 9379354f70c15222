"""Concepts inside the network: TCAV (Kim et al. 2018), does a class depend on a human concept?

`sets` builds concept image sets (built-in transformations of the data's own images, or a user's
folder); `tcav` fits concept activation vectors and scores how a class logit moves along them.
Plain tensors in, plain results out: no config, no tracking.
"""
