"""Instrument-stability time series over whole stores (issue 10).

``study`` (the shared result: ``Series``, ``Study``, ``write_study``, ``parse_when``), one module per
instrument whose ``study(store, *, start=None, stop=None, client=None) -> Study`` builds lazy
reductions over the store and computes them once (``mips``, ``swas``), and ``kernels`` (plain-array
trend, step and outlier fits and per-DCE reductions). The CLI: ``skyreduce trend swas|mips``.
"""
