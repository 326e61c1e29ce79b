"""Backends: local processes, in-process, and Slurm (subprocess or SSH) behind one protocol."""
