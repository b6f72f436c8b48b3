"""ctdoctor: see, explain, fix and guard Linux netfilter connection tracking."""

__version__ = "0.1.0"
